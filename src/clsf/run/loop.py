"""The training loop every run shares, read top to bottom (Lightning's `while not done: advance()`).

`fit` drives a Task -- what trains, an epoch at a time: a classifier through any engine here
(`Classify`), the GAN pair in clsf.gans -- and each epoch's row goes into the RunState; the
callbacks do everything else (checkpoints, logs, early stop, unfreezing, the mistake detectors,
progress). Whether to stop is asked in one place, `state.done`.

A classifier's epoch: the engine trains it (its framework's own step function), validation logits
come back in batches and the metrics are computed in numpy (clsf.metrics).
"""

from __future__ import annotations

import time

import numpy as np

from clsf.config import Config
from clsf.data import Prepared
from clsf.engines.base import Meter
from clsf.engines.schedule import lr_at
from clsf.metrics import metrics_from_logits
from clsf.run.callbacks import Callback
from clsf.run.environment import peak_memory_mb
from clsf.run.state import RunState
from clsf.techniques.tta import averaged_logits


class Task:
    """What `fit` trains, an epoch at a time (a run kind's part of the loop)."""

    def train_epoch(self, state: RunState, callbacks: Callback) -> dict | None:
        """Train epoch `state.epoch + 1` (from step `state.step`, a resume inside it, where the task
        checkpoints inside epochs: then it calls `callbacks.on_step` after every step); its
        metrics.csv row, or None when it stopped inside the epoch (Ctrl-C, a pause: `state.stop`)."""
        raise NotImplementedError


def fit(task: Task, state: RunState, callbacks: Callback) -> RunState:
    """Train from `state` until `state.done`; the state says where it ended and why."""
    try:  # on_train_end also when a start fails: what the callbacks started before it is undone (Ctrl-C's handler)
        callbacks.on_train_start(state)
        while not state.done:
            callbacks.on_epoch_start(state)
            row = task.train_epoch(state, callbacks)
            if row is None:
                break  # stopped inside the epoch: its checkpoint is written (or the last epoch's stands)
            improved = state.end_epoch(row)
            callbacks.on_epoch_end(state, row, improved)
    finally:
        callbacks.on_train_end(state)
    return state


class Classify(Task):
    """A classifier: `engine` trains on `data`'s training split, validates on its val split."""

    def __init__(self, engine, data: Prepared, cfg: Config, steps_per_epoch: int):
        self.engine, self.data, self.cfg, self.steps_per_epoch = engine, data, cfg, steps_per_epoch

    def train_epoch(self, state: RunState, callbacks: Callback) -> dict | None:
        meter, seconds = train_one_epoch(self.engine, self.data, state, callbacks, self.cfg)
        if not meter.complete:
            return None
        return epoch_row(self.engine, self.data, self.cfg, state, meter, seconds, self.steps_per_epoch)


def train_one_epoch(engine, data: Prepared, state: RunState, callbacks: Callback, cfg: Config) -> tuple[Meter, float]:
    """Epoch `state.epoch + 1`, from batch `state.step` (a resume inside it); the meter and seconds."""
    epoch, first_step = state.epoch, state.step
    carried = state.meter["seconds"] if first_step else 0.0  # time of the steps before a mid-epoch resume
    t0 = time.perf_counter()

    def on_step(step: int) -> None:  # after each optimizer step: the state first, then the callbacks
        state.step, state.global_step = step + 1, engine.global_step()
        state.meter = {**meter.state(), "seconds": carried + time.perf_counter() - t0}
        callbacks.on_step(state, meter, step)
        meter.stop_requested = state.stop is not None

    # the meter counts global batches (batch_size x replicas)
    meter = Meter(epoch, engine.global_step() - first_step, len(data.train), cfg.batch_size * state.replicas, on_step)
    if first_step:
        meter.restore(state.meter)  # the epoch's running sums up to the checkpoint
    engine.train_epoch(data.train.x, data.train.y, epoch, meter, first_step)
    state.global_step = engine.global_step()
    return meter, carried + time.perf_counter() - t0


def epoch_row(engine, data: Prepared, cfg: Config, state: RunState, meter: Meter, seconds: float,
              steps_per_epoch: int) -> dict:
    """The epoch's metrics.csv row: training means from the meter, validation from logits."""
    val_loss = val_acc = None
    if data.val is not None:
        val_loss, val_acc = metrics_from_logits(logits_of(engine, data.val.x, cfg), data.val.y)
    lr = lr_at(engine.global_step() - 1, steps_per_epoch, cfg.epochs, cfg.optim, cfg.unfreeze_after)  # the epoch's last step
    return {"epoch": state.epoch + 1, "train_loss": meter.loss, "train_acc": meter.acc, "val_loss": val_loss,
            "val_acc": val_acc, "lr": lr, "seconds": seconds, "images_per_s": meter.seen / seconds,
            "peak_mem_mb": peak_memory_mb()}


def logits_of(engine, x: np.ndarray, cfg: Config) -> np.ndarray:
    """An engine's logits (N, K) for uint8 images (N, H, W, C), averaged over the test-time views
    cfg.tta_flip and cfg.tta_shift ask for (clsf.techniques.tta)."""
    return averaged_logits(engine.predict_logits, x, cfg.tta_flip, cfg.tta_shift)
