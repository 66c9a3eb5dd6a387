"""optim.ema: an exponential moving average of the weights, which evaluation and checkpoints use.

Every `optim.ema_every` optimizer steps the average moves towards the weights being trained:

    avg += (1 - d) * (w - avg),   d = min(optim.ema, (1 + n) / (10 + n)),  n = updates so far

(the warm-up on d is TensorFlow's ExponentialMovingAverage with num_updates: early averages are
not dragged towards the random initialisation). With optim.ema_power = p > 0 the warm-up is
airbench's instead: d = optim.ema * (t / T)^p at optimizer step t of T, so the average follows the
weights early and averages strongly at the end. Batch norm's moving statistics are averaged with
the weights, as airbench's Lookahead averages every tensor of its state.

optim.lookahead: after every update the weights being trained are set to the average (airbench's
Lookahead form; the optimizer's slots are left as they are). Without it the engine keeps training
its own weights and the average only evaluates.

It is computed here, in numpy, from the neutral weights (weights.npz's layout) every engine hands
over, so keras, tf, torch and Keras on its other backends average the same bits in the same order:
the rule cannot differ between engines. Evaluation (each epoch's validation, the test split, TTA
views) swaps the average in and back.

Checkpoints: weights.npz holds the average (what evaluate, predict, export and init_from read: the
model the run reports on) and the weights being trained go to train_weights.npz with the update
count in averaging.json, so a resume continues both exactly. A resume with --weights-only starts
training from the average, and the average starts again from it.
"""

from __future__ import annotations

import json
import os

import numpy as np

from clsf.engines.base import Engine, Meter
from clsf.engines.checkpoint import damaged_state
from clsf.engines.checkpoint import Checkpoint



class Averaged:
    """An engine whose evaluation and checkpoints use the EMA of its weights; everything else is
    the engine's own (attribute access goes through to it)."""

    def __init__(self, engine: Engine, decay: float, every: int, power: float = 0.0, total_steps: int = 1,
                 lookahead: bool = False):
        self.engine, self.decay, self.every = engine, decay, every
        self.power, self.total_steps, self.lookahead = power, max(1, total_steps), lookahead
        self.average: dict | None = None  # {layer: {name: float32 array}}; None until the first update
        self.updates = 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    # -- training: an update after every `every`-th optimizer step, before the loop's callbacks --------
    def train_epoch(self, x: np.ndarray, y: np.ndarray, epoch: int, meter: Meter, first_step: int = 0) -> None:
        callbacks = meter.on_step

        def on_step(step: int) -> None:
            t = self.engine.global_step()
            if t % self.every == 0:
                self.update(self.engine.weights(), t)
                if self.lookahead:
                    self.engine.set_weights(self.average)
            if callbacks is not None:
                callbacks(step)  # a checkpoint written there holds this update

        meter.on_step = on_step
        try:
            self.engine.train_epoch(x, y, epoch, meter, first_step)
        finally:
            meter.on_step = callbacks

    def update(self, weights: dict, step: int = 0) -> None:
        if self.power:
            d = self.decay * min(1.0, step / self.total_steps) ** self.power
        else:
            d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if self.average is None:
            self.average = {layer: {k: v.astype(np.float32) for k, v in ws.items()} for layer, ws in weights.items()}
        else:
            for layer, ws in weights.items():
                for k, v in ws.items():
                    a = self.average[layer][k]
                    a += np.float32(1 - d) * (v - a)  # in place, float32; a weight that did not move stays exact
        self.updates += 1

    # -- evaluation on the average --------------------------------------------------------------
    def _on_average(self, fn, x):
        if self.average is None:  # no update yet (before training): the weights themselves
            return fn(x)
        trained = self.engine.weights()
        self.engine.set_weights(self.average)
        try:
            return fn(x)
        finally:
            self.engine.set_weights(trained)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return self._on_average(self.engine.predict_logits, x)

    def features(self, x: np.ndarray) -> np.ndarray:
        return self._on_average(self.engine.features, x)

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, ckpt: Checkpoint) -> None:
        from clsf.models.transfer import save_npz

        self.engine.save(ckpt)  # ckpt.weights: the trained weights, with the engine's training state
        if self.average is None:
            return
        os.replace(ckpt.weights, ckpt.train_weights)
        save_npz(ckpt.weights, self.average)
        ckpt.averaging.write_text(json.dumps({"updates": self.updates, "decay": self.decay, "every": self.every}))

    def load(self, ckpt: Checkpoint, training_state: bool = True, only: set[str] | None = None) -> None:
        from clsf.models.transfer import load_npz

        self.engine.load(ckpt, training_state, only)  # the average, or every weight from the engine's state
        self.average, self.updates = None, 0
        if not training_state or not ckpt.averaging.exists():
            return  # weights only (init_from, --weights-only): the average starts again from them
        if not ckpt.train_weights.exists():
            raise damaged_state(ckpt.train_weights, "the weights being trained are missing beside their average")
        try:
            self.updates = int(json.loads(ckpt.averaging.read_text())["updates"])
        except (ValueError, KeyError, TypeError) as e:
            raise damaged_state(ckpt.averaging, str(e)) from None
        self.average = {layer: {k: v.astype(np.float32) for k, v in ws.items()}
                        for layer, ws in load_npz(ckpt.weights).items()}
        self.engine.set_weights(load_npz(ckpt.train_weights))


def averaged(engine: Engine, o, total_steps: int):
    """The engine itself when optim.ema is off, else wrapped; `o` the run's OptimConfig,
    total_steps the run's optimizer steps (epochs x steps per epoch)."""
    return Averaged(engine, o.ema, o.ema_every, o.ema_power, total_steps, o.lookahead) if o.ema > 0 else engine
