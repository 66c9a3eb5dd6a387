"""The order and augmentation of one training epoch, drawn once in numpy for every engine.

The plan is a pure function of (seed, epoch): a uniform permutation of the split's indices and,
per image in that order, the crop offsets and the flip. The tf.data and torch pipelines only
gather from it, so all three engines see the same batches with the same crops and flips — the
engine parity test and `clsf compare` rest on that — and epoch k of a resumed run is epoch k of an
uninterrupted one. With alternating flips the flip is a function of (seed, image, epoch parity).
mixup and cutmix are planned per batch the same way (`mix_plan`): every engine mixes the same
images with the same weight and box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clsf.data.transforms import Preprocess


ALTERNATE_STREAM = 1 << 30  # a second random stream of the run's seed, apart from any epoch's
MIX_STREAM = 1 << 29  # mixup/cutmix draws: their own stream per epoch, so turning them on moves no crop or flip


@dataclass
class EpochPlan:
    order: np.ndarray  # (N,) int64: image indices in the order they are trained on
    oy: np.ndarray  # (N,) int32: crop row offset into the zero-padded image, in 0..2*pad
    ox: np.ndarray  # (N,) int32: crop column offset
    flip: np.ndarray  # (N,) bool: mirror horizontally


def epoch_plan(n: int, pre: Preprocess, seed: int, epoch: int) -> EpochPlan:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n).astype(np.int64)
    span = 2 * pre.crop_padding + 1
    oy = rng.integers(0, span, n, dtype=np.int32)
    ox = rng.integers(0, span, n, dtype=np.int32)
    flip = rng.random(n) < (0.5 if pre.hflip else 0.0)
    if pre.hflip_alternate:  # per image, not per position: drawn once for the run, negated in odd epochs
        first = np.random.default_rng([seed, ALTERNATE_STREAM]).random(n) < 0.5  # (N,) indexed by image
        flip = first[order] ^ bool(epoch % 2)
    return EpochPlan(order, oy, ox, flip)


@dataclass
class MixPlan:
    """Per training batch of an epoch (index = the batch's step from the epoch's start)."""
    keep: np.ndarray  # (S,) float32: the weight of each image's own label (and pixels, for mixup)
    other: np.ndarray  # (S,) float32: its partner's, 1 - keep as float32 (every pipeline multiplies by these two)
    box: np.ndarray  # (S, 4) int32: (y0, y1, x0, x1) pasted from the partner (cutmix); empty for mixup


def mix_plan(n: int, batch_size: int, pre: Preprocess, seed: int, epoch: int, size: tuple[int, int]) -> MixPlan:
    """mixup: keep ~ Beta(a, a) over the whole image. cutmix: a box of area (1 - lam) H W with
    lam ~ Beta(a, a) (sides sqrt(1 - lam) H and W, its centre uniform, clipped to the image), and
    keep = 1 - its clipped area / (H W). With both on, each batch is one of the two, half and half."""
    steps = -(-n // batch_size)
    rng = np.random.default_rng([seed, epoch, MIX_STREAM])
    h, w = size
    cut = (rng.random(steps) < 0.5) if pre.mixup and pre.cutmix else np.full(steps, pre.cutmix > 0)
    lam = rng.beta(pre.cutmix or 1.0, pre.cutmix or 1.0, steps) if pre.cutmix else np.ones(steps)
    mix = rng.beta(pre.mixup or 1.0, pre.mixup or 1.0, steps) if pre.mixup else np.ones(steps)
    cy, cx = rng.integers(0, h, steps), rng.integers(0, w, steps)
    ch, cw = (np.sqrt(1 - lam) * h).astype(int), (np.sqrt(1 - lam) * w).astype(int)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch - ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw - cw // 2, 0, w)
    box = np.where(cut[:, None], np.stack([y0, y1, x0, x1], 1), 0).astype(np.int32)
    keep = np.where(cut, 1 - (y1 - y0) * (x1 - x0) / (h * w), mix).astype(np.float32)
    return MixPlan(keep, (1 - keep).astype(np.float32), box)
