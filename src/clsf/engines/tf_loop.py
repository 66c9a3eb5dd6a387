"""Engine `tf`: a custom loop with tf.data, GradientTape and one tf.function train step.

The step has an input signature with a free batch dimension, so the last, smaller batch of an
epoch reuses the same graph instead of tracing a second one; `traces` counts tracings so the loop
can warn if anything makes it retrace. Losses the model tracks (`add_loss`, regularisers) are
added to the data loss.
"""

from __future__ import annotations

import math

from clsf.engines.base import EpochStats, check_finite
from clsf.engines.keras_common import KerasBase


class TFLoopEngine(KerasBase):
    name = "tf"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import tensorflow as tf

        h, w, c = (d for d in self.spec.input_shape)
        images = tf.TensorSpec([None, h, w, c], tf.float32)  # None: any batch size, one trace
        labels = tf.TensorSpec([None], tf.int64)
        self.traces = 0
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn

        @tf.function(input_signature=[images, labels])
        def train_step(x, y):
            self.traces += 1  # Python side effect: runs once per tracing, not per step
            with tf.GradientTape() as tape:
                logits = model(x, training=True)  # (B, K)
                loss = loss_fn(y, logits)  # mean over the batch
                if model.losses:
                    loss = loss + tf.add_n(model.losses)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1), y), tf.int32))
            return loss, correct

        @tf.function(input_signature=[images])
        def predict_step(x):
            return model(x, training=False)

        self.train_step, self._predict_step = train_step, predict_step

    def train_epoch(self, x, y, epoch, on_batch) -> EpochStats:
        from clsf.data.tf_pipeline import make_dataset

        ds = make_dataset(x, y, self.cfg.batch_size, self.pre, training=True, seed=self.cfg.seed, epoch=epoch)
        n_steps = math.ceil(len(y) / self.cfg.batch_size)
        total_loss, total_correct, seen, lr = 0.0, 0, 0, None
        for step, (xb, yb) in enumerate(ds):
            global_step = self.global_step()
            lr = self.lr_for(global_step)
            self.optimizer.learning_rate = lr
            loss, correct = self.train_step(xb, yb)
            loss, n = float(loss), int(yb.shape[0])
            check_finite(loss, epoch, step, global_step)
            total_loss += loss * n  # weight by batch size: the short last batch counts less
            total_correct += int(correct)
            seen += n
            on_batch(step, n_steps, total_loss / seen, total_correct / seen)
        return EpochStats(total_loss / seen, total_correct / seen, seen, lr)
