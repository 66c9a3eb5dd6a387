"""data.mixup / data.cutmix: each normalised training batch mixed with itself in reverse order (image
i with image b-1-i, as timm pairs them), the labels the same mixture of one-hot rows.

    data.mixup=0.2     keep ~ Beta(0.2, 0.2): x = keep * x_i + (1 - keep) * x_partner, over the whole image
    data.cutmix=1.0    a box of area (1 - lam) H W, lam ~ Beta(1, 1) (sides sqrt(1 - lam) H and W, its
                       centre uniform, clipped to the image) pasted from the partner; keep = 1 - its
                       clipped area / (H W)

With both on, each batch is one or the other, half and half. The weight and box are drawn per batch
in numpy, so every engine mixes the same images with the same weight and box.
"""

from __future__ import annotations

import math

import numpy as np

from clsf.errors import UserError
from clsf.techniques.batch import BatchTechnique, box_mask

MIX_STREAM = 1 << 29  # its draws: their own stream per epoch, so turning it on moves no crop or flip


class Mixing(BatchTechnique):
    key, stream, soft_labels, pairs_in_batch, fields = "mixing", MIX_STREAM, True, True, ("mixup", "cutmix")

    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0):
        self.mixup, self.cutmix = mixup, cutmix  # Beta concentrations; 0 = off

    @classmethod
    def check(cls, data) -> None:
        for key in cls.fields:
            a = getattr(data, key)
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not (math.isfinite(a) and 0 <= a <= 100):
                raise UserError(f"data.{key}={a} must be in [0, 100] (a Beta concentration, e.g. "
                                f"{0.2 if key == 'mixup' else 1.0}; 0 turns it off).")

    @classmethod
    def of(cls, data) -> "Mixing | None":
        return cls(data.mixup, data.cutmix) if data.mixup or data.cutmix else None

    @classmethod
    def examples(cls) -> dict[str, "Mixing"]:
        return {"mixup": cls(mixup=0.4), "cutmix": cls(cutmix=1.0), "both": cls(mixup=0.4, cutmix=1.0)}

    def draw(self, rng, n, steps, size):
        """keep (S,) float32: the weight of each image's own label (and pixels, for mixup); other (S,)
        float32: its partner's, 1 - keep as float32 (every framework multiplies by these two); box
        (S, 4) int32: (y0, y1, x0, x1) pasted from the partner (cutmix), empty for mixup."""
        h, w = size
        cut = (rng.random(steps) < 0.5) if self.mixup and self.cutmix else np.full(steps, self.cutmix > 0)
        lam = rng.beta(self.cutmix or 1.0, self.cutmix or 1.0, steps) if self.cutmix else np.ones(steps)
        mix = rng.beta(self.mixup or 1.0, self.mixup or 1.0, steps) if self.mixup else np.ones(steps)
        cy, cx = rng.integers(0, h, steps), rng.integers(0, w, steps)
        ch, cw = (np.sqrt(1 - lam) * h).astype(int), (np.sqrt(1 - lam) * w).astype(int)
        y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch - ch // 2, 0, h)
        x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw - cw // 2, 0, w)
        box = np.where(cut[:, None], np.stack([y0, y1, x0, x1], 1), 0).astype(np.int32)
        keep = np.where(cut, 1 - (y1 - y0) * (x1 - x0) / (h * w), mix).astype(np.float32)
        return {"keep": keep, "other": (1 - keep).astype(np.float32), "box": box}

    def numpy(self, x, y, p, classes):
        """x (b, H, W, C) float32, y (b,) int64 -> the batch mixed with its reverse, labels (b, K) float32."""
        y0, y1, x0, x1 = (int(v) for v in p["box"])
        xr = x[::-1]
        if y1 > y0:  # cutmix
            out = x.copy()
            out[:, y0:y1, x0:x1] = xr[:, y0:y1, x0:x1]
        else:
            out = x * p["keep"] + xr * p["other"]
        onehot = np.eye(classes, dtype=np.float32)[y]
        return out, onehot * p["keep"] + onehot[::-1] * p["other"]

    def tf(self, x, y, p, classes):
        """The reference for x (b, H, W, C) tensors; keep/other float32 scalars and box (4,) int32 tensors."""
        import tensorflow as tf

        keep, other, box = p["keep"], p["other"], p["box"]
        xr = tf.reverse(x, axis=[0])
        inside = box_mask(tf.range(tf.shape(x)[1]), tf.range(tf.shape(x)[2]), box[None])[0]  # (H, W)
        cut = tf.where(inside[None, :, :, None], xr, x)  # an exact copy of the partner's pixels inside the box
        out = tf.cond(box[1] > box[0], lambda: cut, lambda: x * keep + xr * other)
        onehot = tf.one_hot(y, classes, dtype=tf.float32)
        return out, onehot * keep + tf.reverse(onehot, axis=[0]) * other

    def torch(self, x, y, p, classes):
        """The reference for x (b, C, H, W) and y (b,) int64 tensors."""
        import torch

        keep, other = float(p["keep"]), float(p["other"])
        y0, y1, x0, x1 = (int(v) for v in p["box"])
        xr = x.flip(0)
        if y1 > y0:  # cutmix
            x = x.clone()
            x[:, :, y0:y1, x0:x1] = xr[:, :, y0:y1, x0:x1]
        else:
            x = x * keep + xr * other
        onehot = torch.nn.functional.one_hot(y, classes).float()
        return x, onehot * keep + onehot.flip(0) * other
