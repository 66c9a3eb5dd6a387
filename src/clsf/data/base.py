"""The one shape every data source returns.

Every loader produces a `Dataset`: per split, uint8 images in NHWC layout and int64 labels, plus the
class names and where the data came from (source and a sha256 checksum). Engines, reports and the CLI
only ever see this shape, whatever the file format was.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from clsf.errors import UserError


@dataclass
class Split:
    x: np.ndarray  # (N, H, W, C) uint8
    y: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    name: str
    splits: dict[str, Split]
    class_names: list[str]
    source: str
    checksum: str
    notes: dict = field(default_factory=dict)  # e.g. {"skipped_bad_images": 3}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(next(iter(self.splits.values())).x.shape[1:])

    def __getitem__(self, split: str) -> Split:
        return self.splits[split]


def check_arrays(x: np.ndarray, y: np.ndarray, num_classes: int, where: str) -> Split:
    """Validate one split and return it in canonical dtypes; every loader goes through here."""
    if x.ndim == 3:  # (N, H, W) grayscale: add the channel axis
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(
            f"{where}: images have shape {x.shape}, expected (N, H, W) or (N, H, W, 1|3); "
            "check that the file holds images in NHWC layout."
        )
    y = np.asarray(y).reshape(-1)
    if len(x) != len(y):
        raise UserError(
            f"{where}: {len(x)} images but {len(y)} labels; the image and label files must come "
            "from the same split."
        )
    if len(y) and not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{where}: labels have dtype {y.dtype}, expected integers 0..{num_classes - 1}.")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise UserError(
            f"{where}: labels range over {int(y.min())}..{int(y.max())} but there are {num_classes} "
            f"classes; labels must lie in 0..{num_classes - 1}."
        )
    if x.dtype != np.uint8:
        raise UserError(f"{where}: images have dtype {x.dtype}, expected uint8 pixel values 0..255.")
    return Split(np.ascontiguousarray(x), y.astype(np.int64))


def machine_memory() -> int:
    """This machine's physical memory in bytes (what a bound before allocating compares with)."""
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
