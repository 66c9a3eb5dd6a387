"""The contract every engine implements, and the Meter each reports its training steps to.

An engine owns a model, an optimizer and one step function for its framework. The loop that calls
it (clsf.run.loop) is shared, so every engine logs the same metrics and writes the same run
directory. An engine reports each training step to a `Meter` (running loss and accuracy, the stop
on a non-finite loss, the progress bar), written once here. Validation and test metrics come from
the logits an engine returns in batches (clsf.metrics, in numpy), so "val_acc" means the same number
whichever framework produced the logits; its loss comes from clsf.techniques.loss, its precision
from clsf.engines.precision, its checkpoint's file names from clsf.engines.checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from clsf.config import Config
from clsf.data.transforms import Preprocess
from clsf.distributed import World
from clsf.engines.checkpoint import Checkpoint
from clsf.errors import NonFiniteLoss, UserError
from clsf.models.spec import ModelSpec, output_shape
from clsf.techniques.loss import Loss

class Meter:
    """One epoch's running training loss and accuracy, weighted by batch size (the short last batch
    counts less). Engines call `add` per step, or `running` where the framework keeps the means, and
    leave the epoch once `stop_requested` is set (by the loop's `on_step`, at a step boundary)."""

    def __init__(self, epoch: int, first_step: int, images: int, batch_size: int,
                 on_step: Callable[[int], None] | None = None, fix: str = "optim.lr"):
        self.epoch, self.first_step, self.images, self.batch_size = epoch, first_step, images, batch_size
        self.fix = fix  # the settings a non-finite loss's message says to lower
        self.n_steps = math.ceil(images / batch_size)
        self.on_step = on_step  # on_step(step): the loop's callbacks after every optimizer step
        self.stop_requested = False
        self.loss_sum, self.correct, self.seen = 0.0, 0.0, 0
        self.base = (0.0, 0.0, 0)  # sums of the steps before a mid-epoch resume

    def state(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen}

    def restore(self, state: dict) -> None:
        """Continue an epoch interrupted after `state['seen']` images (a mid-epoch checkpoint)."""
        self.loss_sum, self.correct, self.seen = state["loss_sum"], state["correct"], state["seen"]
        self.base = (self.loss_sum, self.correct, self.seen)

    def add(self, step: int, loss: float, correct: int) -> None:
        """A step's mean loss and number of correct predictions (`step` counts from the epoch's start)."""
        n = self._seen_after(step) - self.seen
        self._set(step, self.loss_sum + loss * n, self.correct + correct)

    def running(self, step: int, mean_loss: float, mean_acc: float) -> None:
        """Running means over the steps since this call of fit began (what Keras' fit logs)."""
        loss0, correct0, seen0 = self.base
        n = self._seen_after(step) - seen0
        self._set(step, loss0 + mean_loss * n, correct0 + mean_acc * n)

    def _seen_after(self, step: int) -> int:
        return min((step + 1) * self.batch_size, self.images)

    def _set(self, step: int, loss_sum: float, correct: float) -> None:
        self.seen = self._seen_after(step)
        self.loss_sum, self.correct = loss_sum, correct
        if not math.isfinite(self.loss):  # big_vision's rule: stop at once, saying where
            raise NonFiniteLoss(self.epoch, step, self.first_step + step, self.loss, self.fix)
        if self.on_step:
            self.on_step(step)

    @property
    def complete(self) -> bool:  # every image of the epoch trained on (else it stopped inside)
        return self.seen >= self.images

    @property
    def loss(self) -> float:  # mean training loss (with label smoothing and model losses, if any)
        return self.loss_sum / max(self.seen, 1)

    @property
    def acc(self) -> float:  # training accuracy, dropout on
        return self.correct / max(self.seen, 1)


class Engine(ABC):
    """What the shared loop, evaluate, predict, export, the GAN's judge and compare use of an engine,
    and nothing more. One subclass per engine file, listed in clsf.engines (the registry)."""

    name: str  # the registry's name, e.g. "torch"
    streams_across_replicas = True  # can train on streamed files (data.stream) with several replicas
    world: World  # which replicas are this process's (clsf.distributed); World() for one process
    device: str  # where the model runs, e.g. "cpu", "cuda:0", "gpu:0"
    precision = "fp32"  # what it computes in: cfg.precision, `auto` resolved (resolve_precision)
    cpu_kernels_bf16 = True  # its CPU kernels run bf16 on a CPU's bf16 units, so `auto` takes bf16 there

    def __init__(self, cfg: Config, spec: ModelSpec, steps_per_epoch: int):
        self.cfg, self.spec, self.pre = cfg, spec, Preprocess.of(cfg.data)
        self.classes = output_shape(spec)[0]  # K: the logits' width (and mixed batches' soft-label width)
        # cross-entropy with optim.label_smoothing and optim.class_weight (resolved from the training split)
        self.loss = Loss.of(cfg.optim, self.classes)

    def check_device(self, requested: str) -> None:
        """A GPU asked for by name (device=cuda, gpu:0) where the engine finds none: refused in one line,
        as the torch engine refuses, never trained on the CPU under that name."""
        if requested not in ("auto", "cpu") and self.device == "cpu":
            raise UserError(f"device '{requested}' asks for a GPU, and the {self.name} engine finds none here; use "
                            "device=auto (a GPU where there is one) or device=cpu.")

    @classmethod
    def detect_world(cls) -> World:
        """The replicas this run has, from what its launcher set (read before the engine is built:
        batch_size is per replica, so the steps per epoch depend on it)."""
        return World()

    @abstractmethod
    def train_epoch(self, x: np.ndarray, y: np.ndarray, epoch: int, meter: Meter, first_step: int = 0) -> None:
        """One epoch of the plan (clsf.data.order), from batch `first_step`; each step reported to
        `meter`, and the epoch left early once `meter.stop_requested` says so."""

    @abstractmethod
    def predict_logits(self, x: np.ndarray) -> np.ndarray: ...  # (N, K) logits, in eval_batch_size chunks

    @abstractmethod
    def features(self, x: np.ndarray) -> np.ndarray: ...  # (N, D): the last layer's input, flattened

    @abstractmethod
    def save(self, ckpt: Checkpoint) -> None: ...  # ckpt.weights (neutral layout) + the engine's training state

    @abstractmethod
    def load(self, ckpt: Checkpoint, training_state: bool = True, only: set[str] | None = None) -> None: ...

    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        """The model's weights as a checkpoint's weights file holds them: {layer: {name: array}} (copies)."""
        raise UserError(f"the {self.name} engine does not hand its weights over, which optim.ema needs; "
                        "use optim.ema=0 with it.")

    def set_weights(self, weights: dict[str, dict[str, np.ndarray]]) -> None:
        """Every weight from the layout `weights` returns (the optimizer state is left as it is)."""
        raise UserError(f"the {self.name} engine does not take weights over, which optim.ema needs; "
                        "use optim.ema=0 with it.")

    @abstractmethod
    def global_step(self) -> int: ...

    @abstractmethod
    def set_global_step(self, step: int) -> None: ...  # resumed with another replica count: the schedule's step

    @abstractmethod
    def unfreeze(self) -> None: ...  # freeze=trunk ends: every layer trains from the next step

    def diagnostics(self, detail: bool = False) -> dict[str, dict]:
        """Per traced function: {"traces": n, "graph_nodes": k or None (only with detail)}; {} where
        nothing is traced. The loop's retrace detector reads the counts every epoch."""
        return {}

    def environment(self) -> dict:
        """Facts for env.json beyond the package versions: threads, devices."""
        return {}

    def export(self, fmt: str, path: Path, a: np.ndarray, b: np.ndarray, probabilities: bool, example: np.ndarray) -> None:
        """Write the model as `fmt` (one of the registry entry's exports) at `path`, taking raw NHWC
        pixels normalised inside by `raw * a + b`."""
        raise UserError(f"the {self.name} engine does not export; see `clsf export --help` for the formats.")

    def close(self) -> None:
        """Teardown once the run's files are written (e.g. leaving a process group together)."""


def frozen_layers(cfg: Config, spec: ModelSpec) -> list[str]:
    """The layers freeze=trunk keeps fixed: every layer with weights but the classifier head."""
    from clsf.models.transfer import param_layers

    return param_layers(spec)[:-1] if cfg.freeze == "trunk" else []
