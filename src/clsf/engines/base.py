"""The contract every engine implements, and the metric definitions they all share.

An engine owns a model, an optimizer and one step function for its framework. The loop that calls
it (clsf.run.train) is shared, so every engine logs the same metrics and writes the same run
directory. Validation and test metrics are computed here, in numpy, from the logits an engine
returns in batches, so "val_acc" means the same number whichever framework produced the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from clsf.config import Config
from clsf.data.transforms import Preprocess
from clsf.errors import UserError
from clsf.models.spec import ModelSpec


class NonFiniteLoss(UserError):
    """Training produced a NaN/inf loss; the run stops at once, keeping the last good checkpoint."""

    def __init__(self, epoch: int, step: int, global_step: int, value: float):
        self.epoch, self.step, self.global_step, self.value = epoch, step, global_step, value
        super().__init__(
            f"the training loss became {value} at epoch {epoch + 1}, step {step + 1} (global step "
            f"{global_step + 1}); the run stopped there and checkpoints/last holds the last good epoch — "
            "lower optim.lr, set optim.clip_norm, or check the inputs for NaNs."
        )


@dataclass
class EpochStats:
    loss: float  # mean training loss over the epoch's images (with label smoothing, if any)
    acc: float  # training accuracy, dropout on
    images: int
    lr: float  # learning rate of the last step


# on_batch(step, n_steps, running_loss, running_acc) -> None, for progress bars
BatchHook = Callable[[int, int, float, float], None]


class Engine(Protocol):
    name: str

    def __init__(self, cfg: Config, spec: ModelSpec, pre: Preprocess, steps_per_epoch: int): ...

    def train_epoch(self, x: np.ndarray, y: np.ndarray, epoch: int, on_batch: BatchHook) -> EpochStats: ...

    def predict_logits(self, x: np.ndarray) -> np.ndarray: ...  # (N, K), in eval_batch_size chunks

    def save(self, folder: Path) -> None: ...  # weights.npz (neutral layout) + training state

    def load(self, folder: Path, training_state: bool = True) -> None: ...

    def global_step(self) -> int: ...


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


def check_finite(loss: float, epoch: int, step: int, global_step: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLoss(epoch, step, global_step, loss)


def get_engine(name: str):
    if name == "keras":
        from clsf.engines.keras_fit import KerasFitEngine as E
    elif name == "tf":
        from clsf.engines.tf_loop import TFLoopEngine as E
    elif name == "torch":
        from clsf.engines.torch_loop import TorchEngine as E
    else:
        raise UserError(f"engine '{name}' is not known; use keras, tf or torch.")
    return E
