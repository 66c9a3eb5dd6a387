"""What the `keras` and `tf` engines share: the model built from the spec, the optimizer with
clsf's unified hyperparameters, the loss on logits, prediction in batches, and checkpoint state.

Optimizers (the same values go to torch, see torch_loop.make_optimizer):
  sgd      momentum 0.9 (optim.momentum), nesterov optional
  adam     beta1 0.9, beta2 0.999, eps 1e-7
  adamw    as adam, with decoupled weight decay
  rmsprop  rho 0.9, eps 1e-7 inside the square root: w -= lr * g / sqrt(v + eps)  (Keras' rule;
           torch's RMSprop uses alpha 0.99, eps 1e-8 outside the root, so clsf gives torch this rule)
Weight decay is decoupled for every optimizer: w -= lr * weight_decay * w, on every variable.
Gradient clipping is by global L2 norm (optim.clip_norm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clsf.config import Config, OptimConfig
from clsf.data.transforms import Preprocess
from clsf.engines.schedule import lr_at
from clsf.frameworks import import_tf
from clsf.models.spec import ModelSpec, output_shape


def make_optimizer(o: OptimConfig):
    import keras

    common = dict(learning_rate=o.lr, global_clipnorm=o.clip_norm)
    if o.name != "adamw":
        common["weight_decay"] = o.weight_decay or None
    if o.name == "sgd":
        return keras.optimizers.SGD(momentum=o.momentum, nesterov=o.nesterov, **common)
    if o.name == "adam":
        return keras.optimizers.Adam(beta_1=o.beta1, beta_2=o.beta2, epsilon=o.eps, **common)
    if o.name == "adamw":
        return keras.optimizers.AdamW(weight_decay=o.weight_decay, beta_1=o.beta1, beta_2=o.beta2, epsilon=o.eps, **common)
    return keras.optimizers.RMSprop(rho=o.rho, epsilon=o.eps, momentum=0.0, **common)


def make_loss(num_classes: int, label_smoothing: float):
    """Cross-entropy on logits (the model outputs logits; softmax lives inside the loss)."""
    import keras
    import tensorflow as tf

    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    cce = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)
    return lambda y, logits: cce(tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), num_classes), logits)


class KerasBase:
    """Model, optimizer, schedule, prediction and checkpoints for the two TensorFlow engines."""

    name = "keras"

    def __init__(self, cfg: Config, spec: ModelSpec, pre: Preprocess, steps_per_epoch: int):
        import_tf()
        import keras

        from clsf.models.keras import build_keras

        keras.utils.set_random_seed(cfg.seed)  # python, numpy and TF seeds: initial weights, dropout
        self.cfg, self.spec, self.pre, self.steps_per_epoch = cfg, spec, pre, steps_per_epoch
        self.model = build_keras(spec)
        self.optimizer = make_optimizer(cfg.optim)
        self.optimizer.build(self.model.trainable_variables)
        self.loss_fn = make_loss(output_shape(spec)[0], cfg.optim.label_smoothing)

    def lr_for(self, step: int) -> float:
        return lr_at(step, self.steps_per_epoch, self.cfg.epochs, self.cfg.optim)

    def global_step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        from clsf.data.tf_pipeline import make_dataset

        ds = make_dataset(x, np.zeros(len(x), np.int64), self.cfg.eval_batch_size, self.pre, training=False)
        return np.concatenate([np.asarray(self._predict_step(xb)) for xb, _ in ds])

    def _predict_step(self, xb):  # Keras' compiled predict function; the tf engine has its own tf.function
        return self.model.predict_on_batch(xb)

    # -- checkpoints: neutral weights + every model/optimizer variable (dropout RNG state included)
    def save(self, folder: Path) -> None:
        from clsf.models.transfer import keras_weights, save_npz

        save_npz(folder / "weights.npz", keras_weights(self.model, self.spec))
        state = {f"model/{i}": v.numpy() for i, v in enumerate(self.model.variables)}
        state.update({f"optim/{i}": v.numpy() for i, v in enumerate(self.optimizer.variables)})
        np.savez(folder / "state.npz", **state)

    def load(self, folder: Path, training_state: bool = True) -> None:
        from clsf.models.transfer import load_npz, set_keras_weights

        if not training_state or not (folder / "state.npz").exists():
            set_keras_weights(self.model, self.spec, load_npz(folder / "weights.npz"))
            return
        with np.load(folder / "state.npz") as z:
            for i, v in enumerate(self.model.variables):
                v.assign(z[f"model/{i}"])
            for i, v in enumerate(self.optimizer.variables):
                v.assign(z[f"optim/{i}"])
