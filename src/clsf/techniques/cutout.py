"""data.cutout: a square of each training image erased (Cutout, DeVries & Taylor 2017).

    data.cutout=16     a 16x16 square, its centre uniform over the image's pixels, clipped at the
                       border (so near an edge less is erased), set to 0 after normalisation: with
                       data.scale=standardize that is the training split's mean colour, as in the paper

Drawn per image in numpy, in the epoch's order, so every engine erases the same pixels of the same
images; the labels stay as they are (after mixup or cutmix, the mixed image is erased).
"""

from __future__ import annotations

import numpy as np

from clsf.errors import UserError
from clsf.techniques.batch import BatchTechnique, box_mask

MAX_SIDE = 1024  # pixels


class Cutout(BatchTechnique):
    key, stream, per_image, fields = "cutout", 1 << 28, True, ("cutout",)

    def __init__(self, cutout: int):
        self.cutout = cutout  # pixels: the square's side

    @classmethod
    def check(cls, data) -> None:
        if not 0 <= data.cutout <= MAX_SIDE:
            raise UserError(f"data.cutout={data.cutout} must be in [0, {MAX_SIDE}] (the side of the erased square in "
                            "pixels, e.g. 16 for 32x32 images; 0 turns it off).")

    @classmethod
    def of(cls, data) -> "Cutout | None":
        return cls(data.cutout) if data.cutout else None

    @classmethod
    def examples(cls) -> dict[str, "Cutout"]:
        return {"side-3": cls(3), "side-8": cls(8)}

    def draw(self, rng, n, steps, size):
        """box (N, 4) int32: (y0, y1, x0, x1) of the square erased from the image at each position."""
        h, w = size
        cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
        side = self.cutout
        half = side // 2
        y0, y1 = np.clip(cy - half, 0, h), np.clip(cy - half + side, 0, h)
        x0, x1 = np.clip(cx - half, 0, w), np.clip(cx - half + side, 0, w)
        return {"box": np.stack([y0, y1, x0, x1], 1).astype(np.int32)}

    def numpy(self, x, y, p, classes):
        """x (b, H, W, C) float32 -> x with each image's box set to 0."""
        inside = box_mask(np.arange(x.shape[1]), np.arange(x.shape[2]), p["box"])  # (b, H, W)
        return np.where(inside[..., None], np.float32(0), x), y

    def tf(self, x, y, p, classes):
        import tensorflow as tf

        inside = box_mask(tf.range(tf.shape(x)[1]), tf.range(tf.shape(x)[2]), p["box"])
        return tf.where(inside[..., None], tf.zeros_like(x), x), y

    def torch(self, x, y, p, classes):
        """x (b, C, H, W)."""
        import torch

        box = torch.from_numpy(p["box"]).to(x.device)
        inside = box_mask(torch.arange(x.shape[2], device=x.device), torch.arange(x.shape[3], device=x.device), box)
        return x.masked_fill(inside[:, None], 0.0), y
