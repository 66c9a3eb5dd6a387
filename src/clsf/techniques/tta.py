"""tta_flip, tta_shift: test-time augmentation -- evaluation averages the logits of several views of
each image. tta_flip averages an image's logits with its left-right mirror's; tta_shift=s averages
that with the mean of two views translated by (-s, -s) and (+s, +s) pixels (reflect-padded), half and
half, as airbench's multi-view evaluation does.

The views are made here in numpy from the uint8 images and handed to the engine's prediction, so
every engine sees the same pixels and no framework realises anything of its own.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def averaged_logits(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, flip: bool, shift: int) -> np.ndarray:
    """(N, K) logits of uint8 images x (N, H, W, C) averaged over the views; `predict` maps images
    to their (N, K) logits (an engine's predict_logits)."""

    def flipped(v):  # the flip-averaged logits of the view v
        logits = predict(v)
        if flip:
            logits = (logits + predict(np.ascontiguousarray(v[:, :, ::-1]))) / 2
        return logits

    logits = flipped(x)
    if shift:
        s, (h, w) = shift, x.shape[1:3]
        padded = np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect")  # (N, H+2s, W+2s, C)
        shifted = [np.ascontiguousarray(padded[:, o:o + h, o:o + w]) for o in (0, 2 * s)]
        logits = 0.5 * logits + 0.5 * (flipped(shifted[0]) + flipped(shifted[1])) / 2
    return logits
