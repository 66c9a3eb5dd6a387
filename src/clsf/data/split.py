"""Deterministic, seeded, stratified splits and subsets.

Stratified because real sources are often class-sorted (clsf loads image folders class-mixed, but a
user's .npz may not be): taking the last 20% of such a file as validation, as hand-written scripts do,
would validate on one or two classes and never train on them.
"""

from __future__ import annotations

import numpy as np

from clsf.data.base import Split
from clsf.errors import UserError


def stratified_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (rest, picked) index arrays. `picked` holds round(fraction * n) indices in all, shared
    among classes in proportion to their counts (largest remainder), each class shuffled by `seed`."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = fraction * counts
    take = np.floor(quota).astype(int)
    short = int(round(fraction * len(y))) - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    picked = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        picked.append(idx[:k])
    picked = np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(y)), picked)
    return rest, picked


def train_val_split(train: Split, val_split: float, seed: int) -> tuple[Split, Split | None]:
    if not 0.0 <= val_split < 1.0:
        raise UserError(f"val_split={val_split} is out of range; use a fraction in [0, 1), e.g. 0.2.")
    if val_split == 0:
        return train, None
    rest, val = stratified_indices(train.y, val_split, seed)
    if len(val) == 0 or len(rest) == 0:
        raise UserError(f"val_split={val_split} leaves an empty split of {len(train)} images; choose another fraction.")
    return Split(train.x[rest], train.y[rest]), Split(train.x[val], train.y[val])


def subset(split: Split, size: int | None, seed: int, what: str) -> Split:
    if size is None or size >= len(split):
        return split
    if size <= 0:
        raise UserError(f"{what} subset size must be positive, got {size}.")
    _, keep = stratified_indices(split.y, size / len(split), seed)
    return Split(split.x[keep], split.y[keep])


def hold_out_test(train: Split, fraction: float, seed: int, source_checksum: str) -> tuple[Split, Split, dict]:
    """A test split taken from the training images: `fraction` of each class (stratified, seeded).
    Returns the rest, the test split and what a run records of it: its share, seed, size, and a
    sha256 of the dataset's checksum and the held-out positions, which names the exact images."""
    import hashlib

    if not 0 < fraction < 1:
        raise UserError(f"data.test_split={fraction} must be in (0, 1) to hold out test images (0 turns it off).")
    rest, picked = stratified_indices(train.y, fraction, seed)
    if len(picked) == 0 or len(rest) == 0:
        raise UserError(f"data.test_split={fraction} leaves an empty split of {len(train)} images; add images or "
                        "choose another fraction.")
    digest = hashlib.sha256(source_checksum.encode() + np.asarray(picked, np.int64).tobytes()).hexdigest()
    record = {"fraction": fraction, "seed": seed, "images": int(len(picked)), "sha256": digest}
    return Split(train.x[rest], train.y[rest]), Split(train.x[picked], train.y[picked]), record
