"""Engine `keras`: compile + fit, one epoch per `fit` call.

Everything that varies per step lives in the graph or in the shared contract: the learning rate is
a schedule read from the optimizer's step counter, and a one-line callback hands fit's running
loss and accuracy to the shared Meter (progress bar, stop on a non-finite loss).
"""

from __future__ import annotations

from clsf.engines.base import Meter
from clsf.engines.keras_common import KerasBase
from clsf.errors import UserError


class KerasFitEngine(KerasBase):
    name = "keras"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import tensorflow as tf

        if self.world.size > 1:
            # fit under MultiWorkerMirroredStrategy fails before its first step and inside its loss reduction
            # (bench/results/observations.md, O1); the tf engine is the same model and optimizer in a custom loop
            raise UserError(f"the keras engine (fit) runs as one replica, and this run has {self.world.size} "
                            "(TF_CONFIG / --nproc, or several GPUs); use --engine tf, the same model and optimizer "
                            "in a loop that runs under tf.distribute, or --engine torch.")

        real_train_step, traces = self.model.train_step, self.traces

        def train_step(data):  # fit wraps this in its tf.function: the count is its tracings
            if not tf.executing_eagerly():  # run_eagerly (tf.mode=eager) calls it per step: no tracing
                traces["train_step"] += 1
            return real_train_step(data)

        self.model.train_step = train_step
        mode = self.cfg.tf.mode  # fit's own switches: run_eagerly (no tf.function) and jit_compile (XLA)
        # "acc" is resolved by the labels' shape: sparse, or (mixup/cutmix) the soft rows' largest weight
        self.model.compile(optimizer=self.optimizer, loss=self.loss_fn, metrics=["acc"],
                           run_eagerly=mode == "eager", jit_compile=mode == "xla")

    def new_train_step(self) -> None:
        self.model.make_train_function(force=True)  # fit traces it again on its next call

    def train_epoch(self, x, y, epoch, meter: Meter, first_step: int = 0) -> None:
        self.start_epoch()
        import keras

        from clsf.data.tf_pipeline import make_dataset

        ds = make_dataset(x, y, self.cfg.batch_size, self.pre, training=True, seed=self.cfg.seed, epoch=epoch,
                          first_step=first_step, classes=self.classes)
        model = self.model

        def batch_end(batch, logs):  # fit counts batches from its own start: offset them
            meter.running(first_step + batch, float(logs["loss"]), float(logs["acc"]))
            if meter.stop_requested:
                model.stop_training = True  # fit checks it after every batch

        report = keras.callbacks.LambdaCallback(on_train_batch_end=batch_end)
        # the dataset is already in this epoch's order (clsf.data.order): fit must not reshuffle it
        self.model.fit(ds, epochs=epoch + 1, initial_epoch=epoch, verbose=0, callbacks=[report], shuffle=False)
