"""Metrics from logits, in numpy: every engine's validation and test numbers, and every command's
probabilities, come from here, so "val_acc" or a macro-F1 means the same whichever framework
produced the logits (an engine hands over (N, K) logits in batches, never a metric of its own)."""

from __future__ import annotations

import numpy as np


def metrics_from_logits(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy, computed in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(y)), y].mean())
    acc = float((logits.argmax(axis=1) == y).mean())
    return loss, acc


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def split_report(logits: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    """Metrics of a split from an engine's logits: the one definition `train` and `evaluate` share."""
    loss, acc = metrics_from_logits(logits, y)
    k = len(class_names)
    pred = logits.argmax(1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {name: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, name in enumerate(class_names)}
    return {"test_loss": loss, "test_acc": acc, "test_images": int(len(y)), "per_class_acc": per_class,
            **class_metrics(cm, class_names), "confusion": cm.tolist(), "class_names": class_names}


def class_metrics(cm: np.ndarray, class_names: list[str]) -> dict:
    """From a confusion matrix (rows: true class): each class's precision, recall and F1, and over the
    classes with test images their mean recall (balanced accuracy) and mean F1 (macro-F1): the
    numbers that say how the rare classes fare, where plain accuracy says how the common ones do."""
    support, predicted, hits = cm.sum(1), cm.sum(0), np.diag(cm)
    per = {}
    for i, name in enumerate(class_names):
        p = float(hits[i] / predicted[i]) if predicted[i] else 0.0
        r = float(hits[i] / support[i]) if support[i] else None
        f1 = (2 * p * r / (p + r) if p + r else 0.0) if r is not None else None
        per[name] = {"precision": p, "recall": r, "f1": f1, "images": int(support[i])}
    present = [v for v in per.values() if v["recall"] is not None]
    return {"per_class": per, "balanced_acc": float(np.mean([v["recall"] for v in present])) if present else None,
            "macro_f1": float(np.mean([v["f1"] for v in present])) if present else None}
