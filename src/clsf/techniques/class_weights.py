"""optim.class_weight: imbalanced classes weighted in the loss, the same in every engine.

    optim.class_weight=balanced                  each class weighs N / (K * n_c): the classes count alike
    "optim.class_weight={cat: 3.0, dog: 1.0}"    by class name; classes left out weigh 1

A batch's loss is mean_i w[y_i] * CE_i: Keras' sample weights under its default reduction, which
divides by the batch size. torch's cross_entropy(weight=w) divides by the sum of the batch's weights
instead — a different loss (and a trap: the two frameworks disagree by default); every engine here
computes per-image losses and weights them itself. Soft labels (mixup, cutmix) weigh sum_k y_ik w_k,
from the labels before smoothing. The weights are resolved once, from the training split, into one
number per class in config.yaml, so every engine and a resume use the same numbers (env.json names them).
"""

from __future__ import annotations

import math

import numpy as np

from clsf.errors import UserError

IMBALANCE = 3.0  # the largest class this many times the smallest, unweighted: one warning line


def check(value) -> None:
    """Config validation: None, "balanced", {class name: weight > 0}, or the resolved list."""
    if value is None or value == "balanced":
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        raise UserError(f"optim.class_weight={value!r} is not known; use balanced, or a mapping of class names to "
                        "weights, e.g. \"optim.class_weight={cat: 3.0, dog: 1.0}\".")
    for key, w in items:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0):
            raise UserError(f"optim.class_weight: the weight of {key} is {w!r}; weights are numbers > 0.")


def resolve(value, y: np.ndarray, names: list[str]) -> list[float] | None:
    """One weight per class, in class order, from the training labels `y`."""
    if value is None:
        return None
    k = len(names)
    if isinstance(value, list):
        if len(value) != k:
            raise UserError(f"optim.class_weight holds {len(value)} weights but the data has {k} classes; give "
                            "balanced or a mapping by class name.")
        return [float(w) for w in value]
    counts = np.bincount(np.asarray(y), minlength=k)
    if value == "balanced":
        if counts.min() == 0:
            raise UserError(f"optim.class_weight=balanced: the training split has no images of "
                            f"{names[int(np.argmin(counts))]}; add some, or weigh the classes by name.")
        return [round(float(len(y) / (k * c)), 8) for c in counts]
    unknown = sorted(set(map(str, value)) - set(names))
    if unknown:
        raise UserError(f"optim.class_weight names {unknown[0]}, which is not a class of the data; its classes: "
                        f"{', '.join(names)}.")
    return [float(value.get(n, 1.0)) for n in names]


def imbalance_warning(y: np.ndarray, names: list[str]) -> str | None:
    """One line when the largest class has over IMBALANCE times the images of the smallest."""
    counts = np.bincount(np.asarray(y), minlength=len(names))
    big, small = int(np.argmax(counts)), int(np.argmin(counts))
    if counts[small] == 0 or counts[big] <= IMBALANCE * counts[small]:
        return None
    return (f"clsf: warning: the classes are imbalanced: {names[big]} has {counts[big]} training images, "
            f"{counts[big] / counts[small]:.1f}x the {counts[small]} of {names[small]}; weigh them with "
            "optim.class_weight=balanced, and judge by balanced accuracy and macro-F1 (final.json, the report).")


def per_image_weights(y, weights):
    """(B,) weights of a batch: w[y] for class indices, y @ w for (B, K) soft labels (numpy)."""
    y = np.asarray(y)
    w = np.asarray(weights, np.float64)
    return y @ w if y.ndim == 2 else w[y]


def loss_numpy(logits: np.ndarray, y: np.ndarray, weights, label_smoothing: float = 0.0) -> float:
    """The reference: mean_i w_i * cross-entropy_i (with label smoothing), in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    k = logits.shape[1]
    target = np.asarray(y, np.float64) if np.ndim(y) == 2 else np.eye(k)[np.asarray(y)]
    target = target * (1 - label_smoothing) + label_smoothing / k
    per = -(target * logp).sum(1)
    return float(np.mean(per * per_image_weights(y, weights)))


def torch_weighted(per_image, y, weights):
    """torch: (B,) per-image losses times their weights (the caller takes the mean, or the sum)."""
    w = y.to(weights.dtype) @ weights if y.ndim == 2 else weights[y]
    return per_image * w


def keras_loss(per_image, weights: list[float], soft: bool, reduction: str | None):
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
