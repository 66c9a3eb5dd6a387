"""Image folders too big for memory: the images stay files and are decoded batch by batch.

`Files` stands where a split's (N, H, W, C) uint8 array stands everywhere else: it has a shape,
indexing it (a split, a subset, a probe) gives the selected files, and `load()` decodes them. The
training order, the crops and flips and the shares of several processes come from the same
`epoch_plan` as the in-memory path; only where the pixels come from changes:
  torch  a Dataset of files read by DataLoader worker processes (PIL), one batch of indices each
  tf     tf.data reading and decoding files in parallel (decode_jpeg with the accurate integer DCT,
         which gives PIL's pixels exactly: bench/results/observations.md, O10)
Every image must have the first image's size (resize the folder once, or load it in memory with
--image-size). The checksum covers the file list with sizes and modification times, not the bytes.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from clsf.data.base import Dataset, Split
from clsf.errors import UserError

STREAM_ABOVE_MB = 4096  # data.stream=auto: stream a folder whose decoded images would take more than this


class Files:
    def __init__(self, paths: np.ndarray, image_shape: tuple[int, int, int]):
        self.paths = paths  # (N,) str: absolute file paths
        self.image_shape = tuple(image_shape)  # (H, W, C) every file decodes to

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.image_shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx) -> "Files":
        return Files(self.paths[idx], self.image_shape)

    def read(self, i: int) -> np.ndarray:
        """Image i as (H, W, C) uint8, as the in-memory folder loader decodes it (PIL)."""
        from clsf.data.folder import decode_image, image_to_array

        path = self.paths[i]
        try:
            raw = Path(path).read_bytes()
            a = image_to_array(decode_image(raw, path, self.image_shape[2]), self.image_shape[2], None)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read image '{path}' while streaming ({e}); remove or replace it, or pass "
                            "--skip-bad (which checks every file once before training).") from None
        if a.shape != self.image_shape:
            raise UserError(f"image '{path}' is {a.shape[0]}x{a.shape[1]} but the folder's first image is "
                            f"{self.image_shape[0]}x{self.image_shape[1]}; streaming needs one size — resize the "
                            "folder, or load it in memory with --image-size HxW (data.stream=false).")
        return a

    def load(self) -> np.ndarray:
        """Every file decoded: (N, H, W, C) uint8 (for small selections: a probe, the mistakes)."""
        out = np.empty(self.shape, np.uint8)
        for i in range(len(self)):
            out[i] = self.read(i)
        return out


def as_array(x) -> np.ndarray:
    return x.load() if isinstance(x, Files) else x


def decoded_mb(listing: list[tuple[str, Path]]) -> float:
    """What a folder's images (its listing) would take decoded, in MiB, from the first image's size."""
    if not listing:
        return 0.0
    h, w, c = _first_shape(listing[0][1], None)
    return len(listing) * h * w * c / 2**20


def _first_shape(path: Path, channels: int | None) -> tuple[int, int, int]:
    from clsf.data.folder import decode_image, is_grayscale

    try:
        img = decode_image(path.read_bytes(), str(path), channels)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read image '{path}' ({e}); remove or replace it.") from None
    if channels is None:
        channels = 1 if is_grayscale(img) else 3
    return img.size[1], img.size[0], channels


def load_stream(root: Path, channels: int | None = None, listing: list[tuple[str, Path]] | None = None,
                skip_bad: bool = False) -> Dataset:
    """An image folder (a directory: <root>/<class>/<image>, optionally under train/ and test/) as
    files; channels, when not given, from the first image (1 if it is grayscale). `listing`: the
    folder's files, when the caller has listed them already. skip_bad: every file is decoded once
    now and the ones that fail (or have another size than the rest) are left out and counted."""
    from clsf.data.folder import ORDER_NOTE, _assign, _list_directory, mixed_order

    if listing is None:
        listing = _list_directory(root)
    bad = 0
    if skip_bad:
        listing, bad = _readable(listing, channels)
    if not listing:
        raise UserError(f"{root}: no images found; point --data at a folder laid out as <root>/<class>/<image>.")
    entries, classes = _assign([rel for rel, _ in listing], str(root))
    by_rel = dict(listing)
    shape = _first_shape(by_rel[entries[0][2]], channels)
    h = hashlib.sha256()
    for rel, p in listing:  # the file list, sizes and times: a cheap fingerprint of 200,000 files
        st = p.stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))  # raw names too
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in ("train", "test"):
        rows = [(str(by_rel[rel]), index[cls]) for s, cls, rel in entries if s == split]
        if rows:
            rows = [rows[i] for i in mixed_order(len(rows), split)]  # the order an in-memory load has
            splits[split] = Split(Files(np.array([p for p, _ in rows]), shape), np.array([c for _, c in rows], np.int64))
    notes = {"streamed": True, "order": ORDER_NOTE, **({"skipped_bad_images": bad} if bad else {})}
    return Dataset(root.name, splits, classes, str(root), "files:" + h.hexdigest(), notes)


def _readable(listing: list[tuple[str, Path]], channels: int | None) -> tuple[list[tuple[str, Path]], int]:
    """The files of a listing that decode, at the size of the first one that does; and how many did not.
    A full decode, not a header check: a truncated JPEG has a good header."""
    from clsf.data.folder import decode_image

    good, shape = [], None
    for rel, p in listing:
        try:
            size = decode_image(p.read_bytes(), str(p), channels).size
        except (OSError, ValueError) as e:
            print(f"clsf: skipping '{p}' ({e})", file=sys.stderr)
            continue
        if shape is None:
            shape = size
        if size != shape:
            print(f"clsf: skipping '{p}' ({size[1]}x{size[0]}, not {shape[1]}x{shape[0]} like the first readable image)", file=sys.stderr)
            continue
        good.append((rel, p))
    if listing and not good:
        raise UserError(f"none of the {len(listing)} images could be decoded; check the folder given to --data.")
    return good, len(listing) - len(good)


def load_folder(path: Path, stream: bool | None, channels: int | None, image_size, skip_bad: bool) -> Dataset:
    """An image folder, streamed or in memory. data.stream: true / false, or None (auto): stream a
    directory whose decoded images would exceed STREAM_ABOVE_MB (listed once, for both decisions)."""
    from clsf.data.folder import _list_directory, load_image_folder

    listing = None
    if stream is None and path.is_dir() and image_size is None:
        listing = _list_directory(path)
        mb = decoded_mb(listing)
        stream = mb > STREAM_ABOVE_MB
        if stream:
            print(f"clsf: {path} holds {len(listing)} images, {mb:,.0f} MiB decoded (more than {STREAM_ABOVE_MB} MiB): "
                  "streaming them from disk (data.stream=false loads them in memory).", flush=True)
    if stream:
        return load_stream(path, channels, listing, skip_bad)
    return load_image_folder(path, channels, image_size, skip_bad)


def sample_for_stats(x: Files, seed: int, n: int = 10_000) -> np.ndarray:
    """Up to n images of a streamed split, seeded, decoded: what data.scale=standardize's statistics use."""
    if len(x) <= n:
        return x.load()
    pick = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    return x[pick].load()


def worker_count(workers: int | None) -> int:
    """data.workers, or by default: none on 2 cores or fewer (measured there, bench/stream.py: decoding in
    the training process beats worker processes competing with it for the same cores), else half the
    cores, at most 4."""
    if workers is not None:
        return workers
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores // 2)
