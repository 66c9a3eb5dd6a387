"""Engine `tf`: a custom loop with tf.data, GradientTape and one tf.function train step.

The step is a tf.function (tf.mode=graph, the default), XLA-compiled (tf.mode=xla) or plain
eager Python (tf.mode=eager). Its input signature has a free batch dimension, so the last, smaller
batch of an epoch reuses the same graph instead of tracing a second one; `traces` counts tracings
so the loop can warn if anything makes it retrace. Losses the model tracks (`add_loss`, regularisers) are
added to the data loss. The learning rate is the optimizer's schedule (keras_common.schedule).
"""

from __future__ import annotations

from clsf.engines.base import Meter
from clsf.engines.keras_common import KerasBase, collective


class TFLoopEngine(KerasBase):
    name = "tf"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.new_train_step()

    def new_train_step(self) -> None:
        import tensorflow as tf

        h, w, c = self.spec.input_shape
        images = tf.TensorSpec([None, h, w, c], tf.float32)  # None: any batch size, one trace
        mixed = self.pre.soft_labels  # mixup/cutmix: (B, K) soft labels; accuracy against each row's largest weight
        labels = tf.TensorSpec([None, self.classes], tf.float32) if mixed else tf.TensorSpec([None], tf.int64)
        model, optimizer, loss_fn, traces = self.model, self.optimizer, self.loss_fn, self.traces
        fp16 = self.precision == "fp16"

        def train_step(x, y):
            if not tf.executing_eagerly():  # tracing (graph, xla): counts tracings; in eager mode every call runs this
                traces["train_step"] += 1  # Python side effect: runs once per tracing, not per step
            with tf.GradientTape() as tape:
                logits = tf.cast(model(x, training=True), tf.float32)  # (B, K); float32 under mixed precision too
                loss = loss_fn(y, logits)  # mean over the batch
                if model.losses:
                    loss = loss + tf.add_n([tf.cast(extra, tf.float32) for extra in model.losses])
                scaled = optimizer.scale_loss(loss) if fp16 else loss  # LossScaleOptimizer: fp16 gradients stay finite
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))  # (unscale,) clip, decay, update
            target = tf.argmax(y, axis=1) if mixed else y
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1), target), tf.int32))
            return loss, correct

        mode = self.cfg.tf.mode  # eager: the step runs as plain Python, op by op (a hand-written loop's first form)
        if self.world.size > 1:
            self.train_step = self.replicated_step()
            return
        self.train_step = train_step if mode == "eager" else tf.function(
            train_step, input_signature=[images, labels], jit_compile=mode == "xla")  # graph, or XLA-compiled

    def replicated_step(self):
        """The step under tf.distribute: each replica's loss is its weighted share of the global
        batch's mean (clsf.data.tf_pipeline.make_replica_dataset), and Keras' optimizer sums the
        replicas' gradients before the update; the loss and correct count come back summed."""
        import tensorflow as tf

        model, optimizer, traces, strategy = self.model, self.optimizer, self.traces, self.strategy
        per_image = self.loss.keras(soft=self.pre.soft_labels, per_image=True)  # (B,) w_i * loss_i
        replicas = self.world.size

        def replica_step(x, y, scale):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(x, training=True), tf.float32)  # (b, K): this replica's share
                loss = tf.reduce_sum(per_image(y, logits)) * scale  # its part of the global mean
                if model.losses:  # counted once in the replicas' sum
                    loss = loss + tf.add_n([tf.cast(extra, tf.float32) for extra in model.losses]) / replicas
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))  # all-reduce (sum), decay, update
            hits = tf.cast(tf.equal(tf.argmax(logits, axis=1), y), tf.float32) * tf.cast(scale > 0, tf.float32)
            return loss, tf.reduce_sum(hits)

        @tf.function(reduce_retracing=True)  # the epoch's last, smaller shares: one more trace at most
        def train_step(x, y, scale):
            traces["train_step"] += 1
            loss, correct = strategy.run(replica_step, args=(x, y, scale))
            total = tf.distribute.ReduceOp.SUM
            return strategy.reduce(total, loss, axis=None), strategy.reduce(total, correct, axis=None)

        return train_step

    def train_epoch(self, x, y, epoch, meter: Meter, first_step: int = 0) -> None:
        self.start_epoch()
        from clsf.data.tf_pipeline import make_dataset

        if self.world.size > 1:  # each replica's share of every global batch, summed back
            with collective("training a step"):  # a worker lost: one line, not TF's traceback
                for step, (xb, yb, scale) in enumerate(self.replica_batches(x, y, epoch, first_step), start=first_step):
                    loss, correct = self.train_step(xb, yb, scale)
                    meter.add(step, float(loss), int(correct))
                    if meter.stop_requested:  # at a step boundary: Ctrl-C, or a pause the loop asked for
                        break
            return
        ds = make_dataset(x, y, self.cfg.batch_size, self.pre, training=True, seed=self.cfg.seed, epoch=epoch,
                          first_step=first_step, classes=self.classes)
        for step, (xb, yb) in enumerate(ds, start=first_step):  # xb (B, H, W, C) float32, yb (B,) int64 or (B, K) soft
            loss, correct = self.train_step(xb, yb)
            meter.add(step, float(loss), int(correct))
            if meter.stop_requested:
                break
