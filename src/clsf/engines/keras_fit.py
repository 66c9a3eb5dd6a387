"""Engine `keras`: compile + fit, one epoch per `fit` call, with a callback that sets the learning
rate each step, feeds the progress bar and stops at the first non-finite loss."""

from __future__ import annotations

import math

from clsf.engines.base import EpochStats, NonFiniteLoss
from clsf.engines.keras_common import KerasBase


class KerasFitEngine(KerasBase):
    name = "keras"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model.compile(optimizer=self.optimizer, loss=self.loss_fn, metrics=["acc"])

    def train_epoch(self, x, y, epoch, on_batch) -> EpochStats:
        import keras

        from clsf.data.tf_pipeline import make_dataset

        engine = self
        ds = make_dataset(x, y, self.cfg.batch_size, self.pre, training=True, seed=self.cfg.seed, epoch=epoch)
        n_steps = math.ceil(len(y) / self.cfg.batch_size)
        first_step = self.global_step()  # read once: the step of batch b is first_step + b
        state = {"lr": None, "bad": None}

        class Hooks(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                lr = engine.lr_for(first_step + batch)
                if lr != state["lr"]:  # assign only when the schedule moves
                    engine.optimizer.learning_rate = state["lr"] = lr

            def on_train_batch_end(self, batch, logs=None):
                loss = float(logs["loss"])  # running mean: turns NaN with the first NaN batch
                if not math.isfinite(loss):
                    state["bad"] = (batch, first_step + batch, loss)
                    self.model.stop_training = True
                on_batch(batch, n_steps, loss, float(logs["acc"]))

        history = self.model.fit(ds, epochs=epoch + 1, initial_epoch=epoch, verbose=0, callbacks=[Hooks()],
                                 shuffle=False)  # the dataset is already shuffled (seeded per epoch)
        if state["bad"]:
            step, global_step, loss = state["bad"]
            raise NonFiniteLoss(epoch, step, global_step, loss)
        logs = {k: v[-1] for k, v in history.history.items()}
        return EpochStats(float(logs["loss"]), float(logs["acc"]), len(y), state["lr"])
