"""The training loss: cross-entropy on the model's logits with optim.label_smoothing and
optim.class_weight, defined once here and realised in numpy (the reference), Keras (on every backend)
and torch. The engines take their loss from here and nowhere else.

For logits z (B, K) and labels y -- class indices (B,), or (B, K) soft rows from mixup/cutmix:

    target_i = (1 - s) * onehot(y_i) + s / K             s = optim.label_smoothing
    loss_i   = -sum_k target_ik * log softmax(z_i)_k     (B,)
    w_i      = w[y_i], or sum_k y_ik * w_k for a soft row (the labels before smoothing); 1 without weights
    loss     = mean_i w_i * loss_i                       over the batch size

The mean over the batch size is Keras' sample weights under its default reduction. torch's own
cross_entropy(weight=w) divides by the sum of the batch's weights instead -- a different loss, and a
trap (the two frameworks disagree by default) -- so every framework here computes per-image losses
and weighs them itself. A batch split over replicas or processes sums each share's w_i * loss_i
scaled by the share of the global batch (the engines do that with `per_image`).
"""

from __future__ import annotations

import numpy as np


class Loss:
    """The loss of a run: `classes`, label `smoothing` and one weight per class (or None)."""

    def __init__(self, classes: int, smoothing: float = 0.0, weights=None):
        self.classes, self.smoothing = int(classes), float(smoothing)
        self.weights = None if weights is None else tuple(float(w) for w in weights)
        self._torch_table = None  # the weights as a tensor on the logits' device, made once

    @classmethod
    def of(cls, optim, classes: int) -> "Loss":
        """From the config's `optim` section; optim.class_weight is resolved by then (clsf.run.setup):
        one number per class, or None."""
        w = optim.class_weight
        return cls(classes, optim.label_smoothing, w if isinstance(w, list) else None)

    @classmethod
    def examples(cls, classes: int) -> dict[str, "Loss"]:
        """Settings the generated tests run, by name (tests/test_techniques.py)."""
        w = [0.5 + 0.75 * k for k in range(classes)]
        return {"plain": cls(classes), "smoothed": cls(classes, 0.1), "weighted": cls(classes, weights=w),
                "smoothed-weighted": cls(classes, 0.2, w)}

    def __repr__(self) -> str:
        return f"Loss(classes={self.classes}, smoothing={self.smoothing}, weights={self.weights})"

    # -- the reference ---------------------------------------------------------------------------
    def numpy(self, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(B,) float64: w_i * loss_i for logits (B, K) and labels (B,) int or (B, K) soft."""
        z = logits.astype(np.float64)
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))  # (B, K) log softmax
        y = np.asarray(y)
        rows = y.astype(np.float64) if y.ndim == 2 else np.eye(self.classes)[y]  # (B, K)
        per = -((rows * (1 - self.smoothing) + self.smoothing / self.classes) * logp).sum(1)
        return per * self.image_weights(y)

    def image_weights(self, y: np.ndarray) -> np.ndarray:
        """(B,) float64: each image's weight, w[y_i] or y_i @ w (ones without class weights)."""
        y = np.asarray(y)
        if self.weights is None:
            return np.ones(len(y))
        w = np.asarray(self.weights, np.float64)
        return y.astype(np.float64) @ w if y.ndim == 2 else w[y]

    # -- Keras, on any backend ----------------------------------------------------------------------
    def keras(self, soft: bool, per_image: bool = False):
        """A Keras loss(y, logits): the batch's mean, or with `per_image` the (B,) w_i * loss_i the
        caller reduces itself. `soft`: the labels are (B, K) rows."""
        import keras

        reduction = None if per_image else "sum_over_batch_size"
        if self.weights is not None:
            return _keras_weighted(Loss(self.classes, self.smoothing).keras(soft, per_image=True), self.weights, soft, reduction)
        if soft:
            return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=self.smoothing, reduction=reduction)
        if not self.smoothing:
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
        cce = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=self.smoothing, reduction=reduction)
        classes = self.classes
        return lambda y, logits: cce(keras.ops.one_hot(keras.ops.reshape(y, [-1]), classes), logits)

    # -- torch -----------------------------------------------------------------------------------
    def torch(self, logits, y):
        """(B,) w_i * loss_i for torch logits (B, K) float32 and labels (B,) int64 or (B, K) float32;
        the caller takes the mean (or its share of the global batch's)."""
        import torch.nn.functional as F

        per = F.cross_entropy(logits, y, label_smoothing=self.smoothing, reduction="none")  # (B,)
        if self.weights is None:
            return per
        if self._torch_table is None or self._torch_table.device != logits.device:
            import torch

            self._torch_table = torch.tensor(self.weights, dtype=logits.dtype, device=logits.device)
        w = self._torch_table
        return per * (y.to(w.dtype) @ w if y.ndim == 2 else w[y])


def _keras_weighted(per_image, weights: tuple[float, ...], soft: bool, reduction: str | None):
    """A Keras loss: `per_image(y, logits)` (B,) times the labels' weights, reduced as Keras reduces
    (sum_over_batch_size: the sum over the batch size; None: per image)."""
    import keras

    table = np.asarray(weights, np.float32)

    class WeightedCrossEntropy(keras.losses.Loss):
        def __init__(self):
            super().__init__(reduction=reduction, name="weighted_cross_entropy")

        def call(self, y, logits):
            w = keras.ops.convert_to_tensor(table)
            if soft:
                per_w = keras.ops.matmul(keras.ops.cast(y, "float32"), w)
            else:
                per_w = keras.ops.take(w, keras.ops.cast(keras.ops.reshape(y, [-1]), "int32"))
            return per_image(y, logits) * per_w

    return WeightedCrossEntropy()
