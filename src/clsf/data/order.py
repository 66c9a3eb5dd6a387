"""The order and augmentation of one training epoch, drawn once in numpy for every engine.

The plan is a pure function of (seed, epoch): a uniform permutation of the split's indices and,
per image in that order, the crop offsets and the flip. The tf.data and torch pipelines only
gather from it, so all three engines see the same batches with the same crops and flips — the
engine parity test and `clsf compare` rest on that — and epoch k of a resumed run is epoch k of an
uninterrupted one. With alternating flips the flip is a function of (seed, image, epoch parity).
Batch techniques (mixup, cutmix, cutout) are planned the same way (`batch_plans`), each from its own
stream of the seed: every engine mixes or erases the same images with the same weights and boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clsf.data.transforms import Preprocess


ALTERNATE_STREAM = 1 << 30  # a second random stream of the run's seed, apart from any epoch's


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


def batch_plans(n: int, batch_size: int, pre: Preprocess, seed: int, epoch: int, size: tuple[int, int]) -> list:
    """[(technique, its epoch plan)] for the active batch techniques (clsf.techniques.batch): every
    engine applies the same draws to the same batches."""
    return [(t, t.plan(n, batch_size, seed, epoch, size)) for t in pre.batch]
