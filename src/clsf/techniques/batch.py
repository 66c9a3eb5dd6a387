"""A batch technique: a change to each training batch after normalisation (mixup, cutmix, cutout),
drawn once in numpy for every engine, realised by each pipeline with the same meaning.

A technique is one module with one `BatchTechnique` subclass, listed in `clsf.techniques.BATCH`:

    check(data)        its config fields' validation (the `data` section), one line per mistake
    of(data)           the technique with its settings, or None when its fields turn it off
    draw(rng, n, steps, size)   its plan for an epoch: arrays per image position (N, ...) of the
                       epoch's order (`per_image`) or per batch step (S, ...), from its own stream
                       of the run's seed, so turning it on moves no order, crop or flip
    numpy(x, y, p, classes)     the reference: x (b, H, W, C) float32 normalised, y (b,) int64 (or
                       (b, K) float32 soft labels from a technique before it) and p its plan's part
                       for this batch, numpy arrays -> (x, y)
    tf(...), torch(...)         the same in each framework: x a (b, H, W, C) tf / (b, C, H, W) torch
                       tensor; p as tensors for tf (tf.data runs it in a graph), as numpy for torch

The tf.data, torch and numpy pipelines call every active technique in the order of the registry,
and tests/test_techniques.py checks every registered technique in every framework against its
numpy reference, and in every pipeline, bit for bit.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class BatchTechnique:
    key: ClassVar[str]  # its name in tests and messages
    stream: ClassVar[int]  # its random stream of the run's seed (distinct per technique)
    per_image: ClassVar[bool] = False  # plan arrays per image position (N, ...); else per batch step (S, ...)
    soft_labels: ClassVar[bool] = False  # the labels it returns are (b, K) float32 rows
    pairs_in_batch: ClassVar[bool] = False  # pairs an image with another of its batch: a batch split over replicas breaks it
    fields: ClassVar[tuple[str, ...]] = ()  # its config keys in the `data` section, each also its attribute

    @classmethod
    def check(cls, data) -> None:
        """Validation of its fields in the config's `data` section (clsf.config.DataConfig)."""

    @classmethod
    def of(cls, data) -> "BatchTechnique | None":
        raise NotImplementedError

    @classmethod
    def examples(cls) -> dict[str, "BatchTechnique"]:
        """Settings the generated tests run it with, by name."""
        raise NotImplementedError

    def overrides(self) -> list[str]:
        """Its settings as config overrides (data.KEY=VALUE)."""
        return [f"data.{key}={getattr(self, key)}" for key in self.fields]

    def draw(self, rng: np.random.Generator, n: int, steps: int, size: tuple[int, int]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def plan(self, n: int, batch_size: int, seed: int, epoch: int, size: tuple[int, int]) -> dict[str, np.ndarray]:
        """The epoch's plan: a pure function of (seed, epoch), the same for every engine and a resume."""
        return self.draw(np.random.default_rng([seed, epoch, self.stream]), n, -(-n // batch_size), size)

    def part(self, plan: dict[str, np.ndarray], lo: int, hi: int, step: int) -> dict[str, np.ndarray]:
        """The plan of the batch of positions lo:hi of the epoch's order, step `step` of it."""
        return {k: v[lo:hi] if self.per_image else v[step] for k, v in plan.items()}

    def numpy(self, x: np.ndarray, y: np.ndarray, p: dict, classes: int):
        raise NotImplementedError

    def tf(self, x, y, p: dict, classes: int):
        raise NotImplementedError

    def torch(self, x, y, p: dict, classes: int):
        raise NotImplementedError


def box_mask(rows, cols, box):
    """(b, H, W) bool: inside each image's box (y0, y1, x0, x1), from (H,) rows, (W,) cols and (b, 4)
    boxes -- numpy arrays, tf or torch tensors alike (only indexing, comparison and & are used)."""
    y0, y1, x0, x1 = (box[:, i][:, None] for i in range(4))  # (b, 1) each
    inside_r = (rows[None, :] >= y0) & (rows[None, :] < y1)  # (b, H)
    inside_c = (cols[None, :] >= x0) & (cols[None, :] < x1)  # (b, W)
    return inside_r[:, :, None] & inside_c[:, None, :]
