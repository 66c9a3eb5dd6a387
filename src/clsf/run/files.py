"""Files written whole or not at all, and names that never replace what exists: the atomic I/O a run
directory, a compare/sweep/tune folder and every command's outputs are written with (a temporary
name, then an atomic rename, so a kill or a full disk leaves the old file or the new one)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np


def write_text(path: Path, text: str) -> None:
    """Write whole or not at all: a temporary name, then an atomic rename."""
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write (a full disk): no .part left behind


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def save_arrays(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fresh_path(path: Path) -> Path:
    """`path`, or path-2, path-3, ... when it is taken: what clsf creates never replaces what exists."""
    path, i, stem = Path(path), 1, Path(path)
    while path.exists():
        i += 1
        path = stem.with_name(f"{stem.name}-{i}")
    return path


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).name if os.sep in text or "/" in text else text).strip("_")[:40]


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip", ".npz")


def data_slug(data: str) -> str:
    """A dataset's part of a run's name: the file's stem, so a run folder never looks like an archive
    (cifar10-jpeg.tar.gz -> cifar10-jpeg)."""
    text = slug(data)
    for suffix in ARCHIVE_SUFFIXES:
        if text.lower().endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)]
    return text
