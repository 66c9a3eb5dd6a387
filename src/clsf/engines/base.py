"""The contract every engine implements, and the bookkeeping and metrics they all share.

An engine owns a model, an optimizer and one step function for its framework. The loop that calls
it (clsf.run.train) is shared, so every engine logs the same metrics and writes the same run
directory. An engine reports each training step to a `Meter` (running loss and accuracy, the stop
on a non-finite loss, the progress bar), written once here. Validation and test metrics are
computed here too, in numpy, from the logits an engine returns in batches, so "val_acc" means the
same number whichever framework produced the logits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from clsf.config import Config
from clsf.distributed import World
from clsf.errors import NonFiniteLoss, UserError
from clsf.models.spec import ModelSpec

# on_batch(step, n_steps, running_loss, running_acc) -> None, for progress bars
BatchHook = Callable[[int, int, float, float], None]


class Meter:
    """One epoch's running training loss and accuracy, weighted by batch size (the short last batch
    counts less). Engines call `add` per step, or `running` where the framework keeps the means."""

    def __init__(self, epoch: int, first_step: int, images: int, batch_size: int, on_batch: BatchHook | None = None,
                 after_step: Callable[[int], None] | None = None):
        self.epoch, self.first_step, self.images, self.batch_size = epoch, first_step, images, batch_size
        self.n_steps = math.ceil(images / batch_size)
        self.on_batch, self.after_step = on_batch, after_step  # after_step(step): the loop's checkpoint hook
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
            raise NonFiniteLoss(self.epoch, step, self.first_step + step, self.loss)
        if self.on_batch:
            self.on_batch(step, self.n_steps, self.loss, self.acc)
        if self.after_step:
            self.after_step(step)

    @property
    def loss(self) -> float:  # mean training loss (with label smoothing and model losses, if any)
        return self.loss_sum / max(self.seen, 1)

    @property
    def acc(self) -> float:  # training accuracy, dropout on
        return self.correct / max(self.seen, 1)


class Engine(Protocol):
    name: str
    world: World  # which process of how many (clsf.distributed); World() for one process
    device: str  # where the model runs, e.g. "cpu", "cuda:0", "gpu:0"
    traces: dict[str, int]  # tf.function name -> times traced (empty for torch)

    def __init__(self, cfg: Config, spec: ModelSpec, steps_per_epoch: int): ...

    def train_epoch(self, x: np.ndarray, y: np.ndarray, epoch: int, meter: Meter, first_step: int = 0) -> None: ...

    def predict_logits(self, x: np.ndarray) -> np.ndarray: ...  # (N, K), in eval_batch_size chunks

    def save(self, folder: Path) -> None: ...  # weights.npz (neutral layout) + training state

    def load(self, folder: Path, training_state: bool = True, only: set[str] | None = None) -> None: ...

    def global_step(self) -> int: ...

    def set_global_step(self, step: int) -> None: ...  # resumed with another process count: the schedule's step

    def unfreeze(self) -> None: ...  # freeze=trunk ends: every layer trains from the next step

    def tracing(self) -> dict: ...  # {tf.function: {"traces": n, "graph_nodes": k or None}}; {} for torch


def check_precision(cfg: Config, on_gpu: bool, device: str) -> None:
    """Mixed precision is a GPU option: on a CPU it is slower (no bf16/fp16 units worth the casts)."""
    if cfg.precision != "fp32" and not on_gpu:
        raise UserError(f"precision={cfg.precision} is for GPUs and this run is on {device}; "
                        "use precision=fp32 (the default), or run where a GPU is found (device=auto).")


def frozen_layers(cfg: Config, spec: ModelSpec) -> list[str]:
    """The layers freeze=trunk keeps fixed: every layer with weights but the classifier head."""
    from clsf.models.transfer import param_layers

    return param_layers(spec)[:-1] if cfg.freeze == "trunk" else []


def metrics_from_logits(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy, computed in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(y)), y].mean())
    acc = float((logits.argmax(axis=1) == y).mean())
    return loss, acc


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
