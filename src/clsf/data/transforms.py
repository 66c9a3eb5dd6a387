"""Normalisation and augmentation, described once, realised by each pipeline with the same meaning.

Order, in every pipeline: uint8 image -> float32 0..255 -> (train only) zero-pad by `crop_padding`
pixels and take a random HxW crop -> (train only) horizontal flip with probability 0.5 ->
normalise. Padding happens before normalisation, so padded pixels are black in every scale.
With `hflip_alternate` the flip is not drawn anew each epoch: an image flipped in one epoch is not
flipped in the next (airbench's derandomised flips: every image is seen both ways in any two epochs).
Then (train only) each normalised batch goes through the active batch techniques (mixup, cutmix,
cutout: clsf.techniques.BATCH, each with its numpy reference and its plan drawn once for every engine).

Scales:  "0-1"          x / 255
         "-1-1"         x / 127.5 - 1
         "standardize"  (x / 255 - mean[c]) / std[c], mean/std per channel on the 0..1 scale
                        (computed from the training split when not given, then stored in the
                        resolved config so evaluation and prediction reuse the same numbers).

The crop and flip are clsf.techniques.crop_flip (its numpy reference, its tf and torch lines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clsf.errors import UserError
from clsf.techniques import BATCH

SCALES = ("0-1", "-1-1", "standardize")


@dataclass
class Preprocess:
    scale: str = "0-1"
    mean: list[float] | None = None  # per channel, 0..1 scale; only for "standardize"
    std: list[float] | None = None
    crop_padding: int = 0  # pixels; 0 turns random crop off
    hflip: bool = False
    hflip_alternate: bool = False  # derandomised flips (airbench): each image's flip alternates by epoch
    batch: tuple = ()  # the active batch techniques (clsf.techniques.batch), in the registry's order

    @classmethod
    def of(cls, d) -> "Preprocess":
        """From a config's `data` section (clsf.config.DataConfig)."""
        batch = tuple(t for t in (technique.of(d) for technique in BATCH) if t is not None)
        return cls(d.scale, d.mean, d.std, d.crop_padding, d.hflip, d.hflip_alternate, batch)

    @property
    def soft_labels(self) -> bool:  # training labels are (B, K) float32 rows (mixup, cutmix)
        return any(t.soft_labels for t in self.batch)

    def validate(self) -> None:
        if self.scale not in SCALES:
            raise UserError(f"data.scale='{self.scale}' is not known; use one of {', '.join(SCALES)}.")
        if self.crop_padding < 0:
            raise UserError(f"data.crop_padding={self.crop_padding} must be >= 0 (pixels).")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise UserError("data.std values must be > 0.")
        if self.hflip_alternate and not self.hflip:
            raise UserError("data.hflip_alternate=true alternates the flips that data.hflip=true makes; set data.hflip=true too.")

    @property
    def augments(self) -> bool:
        return self.crop_padding > 0 or self.hflip

    def affine(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) per channel such that normalised = raw_0_255 * a + b."""
        if self.scale == "0-1":
            a, b = np.full(channels, 1 / 255), np.zeros(channels)
        elif self.scale == "-1-1":
            a, b = np.full(channels, 1 / 127.5), np.full(channels, -1.0)
        else:
            if self.mean is None or self.std is None:
                raise UserError("data.scale=standardize needs data.mean and data.std (they are filled from the training split).")
            mean, std = np.asarray(self.mean, float), np.asarray(self.std, float)
            if len(mean) != channels or len(std) != channels:
                raise UserError(f"data.mean/std have {len(mean)}/{len(std)} values but images have {channels} channels.")
            a, b = 1 / (255 * std), -mean / std
        return a.astype(np.float32), b.astype(np.float32)


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images on the 0..1 scale, in chunks (no float copy)."""
    c = x.shape[-1]
    s, ss, n = np.zeros(c), np.zeros(c), 0
    for i in range(0, len(x), chunk):
        b = x[i:i + chunk].reshape(-1, c).astype(np.float64) / 255
        s += b.sum(0)
        ss += (b * b).sum(0)
        n += len(b)
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean**2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def normalize_np(x: np.ndarray, pre: Preprocess) -> np.ndarray:
    a, b = pre.affine(x.shape[-1])
    return x.astype(np.float32) * a + b


