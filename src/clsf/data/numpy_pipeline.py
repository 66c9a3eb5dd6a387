"""Batches as numpy arrays, for the Keras engines whose backend is not TensorFlow (JAX, PyTorch):
no tf.data there. Same order, crops and flips as the tf.data and torch pipelines: all three read
`clsf.data.order.epoch_plan(seed, epoch)`, and the crop/flip here is `clsf.techniques.crop_flip.numpy`, the reference
the other two are tested against.
"""

from __future__ import annotations

import math

import numpy as np

from clsf.data.order import batch_plans, epoch_plan
from clsf.data.stream import as_array
from clsf.data.transforms import Preprocess
from clsf.techniques import crop_flip


class NumpyBatches:
    """Batch i of an epoch (from batch `first_step`): (x (B, H, W, C) float32 normalised, y (B,) int64,
    or (B, classes) float32 soft labels when training batches are mixed). Random access by index,
    which is what keras.utils.PyDataset asks for."""

    def __init__(self, x, y: np.ndarray, batch_size: int, pre: Preprocess, training: bool, seed: int = 0,
                 epoch: int = 0, first_step: int = 0, classes: int = 0):
        self.x, self.y, self.batch_size, self.pre, self.training = x, y, batch_size, pre, training
        self.a, self.b = pre.affine(x.shape[-1])  # (C,) each: normalised = raw * a + b
        self.plan = epoch_plan(len(y), pre, seed, epoch) if training else None
        self.techniques = batch_plans(len(y), batch_size, pre, seed, epoch, x.shape[1:3]) if training else []
        self.classes = classes
        self.first = first_step * batch_size if training else 0  # a run resumed inside an epoch starts here

    def __len__(self) -> int:
        return math.ceil((len(self.y) - self.first) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        lo = self.first + i * self.batch_size
        hi = min(lo + self.batch_size, len(self.y))
        idx = self.plan.order[lo:hi] if self.training else np.arange(lo, hi)
        xb = as_array(self.x[idx]).astype(np.float32)  # (b, H, W, C) 0..255; streamed files decoded here
        if self.training and self.pre.augments:
            xb = crop_flip.numpy(xb, self.pre.crop_padding, self.plan.oy[lo:hi], self.plan.ox[lo:hi], self.plan.flip[lo:hi])
        xb, yb = xb * self.a + self.b, self.y[idx]
        for t, plan in self.techniques:  # (mixup, cutmix, cutout): the numpy references themselves
            xb, yb = t.numpy(xb, yb, t.part(plan, lo, hi, lo // self.batch_size), self.classes)
        return xb, yb
