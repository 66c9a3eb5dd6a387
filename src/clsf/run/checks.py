"""Mistake detectors: warnings that name the likely cause and the fix. Each fires at most once."""

from __future__ import annotations

import math
import sys

from clsf.models.spec import ModelSpec, output_activation


class Checks:
    def __init__(self, spec: ModelSpec, num_classes: int, quiet: bool = False, silent: bool = False):
        self.spec, self.k, self.quiet = spec, num_classes, quiet
        self.silent = silent  # a process of a multi-process run other than the lead: the lead warns
        self.fired: list[tuple[str, str]] = []  # (key, text)
        self.traces: dict[str, int] = {}  # tf.function tracing counts at the previous epoch's end
        self.expected = 0  # retraces the loop asked for (unfreezing the trunk changes what the step trains)

    def warn(self, key: str, text: str) -> None:
        if any(k == key for k, _ in self.fired):
            return
        self.fired.append((key, text))
        if not self.silent:
            print(f"clsf: warning: {text}", file=sys.stderr)

    def before_training(self) -> None:
        act = output_activation(self.spec)
        if act != "linear":
            self.warn("output", f"the model's last layer applies '{act}', but the loss expects logits and applies "
                                "softmax itself (a softmax or relu here squashes or kills the gradients); "
                                "set the output activation to linear (model.args.output_activation=linear).")

    def expect_retrace(self) -> None:
        """The next epoch traces the train step once more on purpose: not a retracing mistake."""
        self.expected += 1  # one more start, which may trace as often as the first (fit: twice)
        self.traces = {}  # what grows in the next epoch is that start

    EVIDENCE_STEPS = 200  # optimizer steps before accuracy at chance says more than a slow start

    def after_epoch(self, rows: list[dict], engine) -> None:
        last = rows[-1]
        chance = 1.0 / self.k
        acc = last["val_acc"] if last.get("val_acc") is not None else last["train_acc"]
        # evidence, not a slow start: enough steps, accuracy at chance, and a loss still at chance's ln(K) (a
        # model that learns lowers its loss before its accuracy moves; relu or softmax on the logits keep it there)
        if engine.global_step() >= self.EVIDENCE_STEPS and acc < chance * 1.15 + 0.005 \
                and last["train_loss"] >= 0.98 * math.log(self.k):
            self.warn("chance", f"accuracy is {acc:.3f} and the training loss {last['train_loss']:.3f} (chance: "
                                f"{math.log(self.k):.3f}) after {engine.global_step()} steps, chance level for {self.k} "
                                "classes; check that the model outputs logits (no relu/softmax on the last layer), "
                                "that labels match images, and try a smaller learning rate.")
        if len(rows) >= 3 and rows[-1]["train_loss"] >= rows[0]["train_loss"] - 1e-3:
            self.warn("flat", f"the training loss has not fallen in {len(rows)} epochs "
                              f"({rows[0]['train_loss']:.4f} -> {rows[-1]['train_loss']:.4f}); lower optim.lr, "
                              "check the output activation, or check the data's normalisation.")
        # A function may trace more than once while it starts (Keras' fit traces its step twice), but
        # never again later: growth after an epoch, or many traces at once, is a retracing step.
        counts = {fn: d["traces"] for fn, d in engine.diagnostics().items()}
        for fn, n in counts.items():
            if n > 2 * (1 + self.expected) or n > self.traces.get(fn, n):
                self.warn(f"retrace:{fn}", f"the tf.function {fn} was traced {n} times; each retrace rebuilds "
                                           "the graph — feed tensors of one dtype and rank (the input signature "
                                           "allows any batch size) and pass values that change per step as "
                                           "tensors, not Python numbers.")
        self.traces = counts
