"""optim.class_weight: imbalanced classes weighted in the loss, the same in every engine.

    optim.class_weight=balanced                  each class weighs N / (K * n_c): the classes count alike
    "optim.class_weight={cat: 3.0, dog: 1.0}"    by class name; classes left out weigh 1

A batch's loss is mean_i w[y_i] * CE_i in every engine (clsf.techniques.loss realises it, and says
why not torch's own weighting); here: the config's check and the weights' resolution. The weights are
resolved once, from the training split, into one number per class in config.yaml, so every engine and
a resume use the same numbers (env.json names them).
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
