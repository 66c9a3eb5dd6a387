"""CIFAR-10 in its canonical "python version": `cifar-10-batches-py/` or `cifar-10-python.tar.gz`.

Each batch file is a pickle of {b"data": (N, 3072) uint8 in CHW order, b"labels": [int], ...}; the
class names are in `batches.meta`. Batches are read with the restricted unpickler (never plain
pickle), straight from the tarball when that is what we have.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from clsf.data.archive import iter_archive
from clsf.data.base import Dataset, check_arrays, sha256_file
from clsf.data.download import download
from clsf.data.paths import cache_root, data_dirs
from clsf.data.safe_pickle import safe_load
from clsf.errors import UserError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
TARBALL = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]


def _get(d: dict, key: str):
    # Python 2 pickles have bytes keys; re-pickled files may have str keys.
    if key.encode() in d:
        return d[key.encode()]
    if key in d:
        return d[key]
    raise KeyError(key)


def _decode_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    d = safe_load(raw, where)
    try:
        data = np.asarray(_get(d, "data"), dtype=np.uint8)
        labels = np.asarray(_get(d, "labels"), dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: not a CIFAR batch (missing or bad field {e}); use the original batch files.") from None
    if data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{where}: batch data has shape {data.shape}, expected (N, 3072) for 32x32x3 images.")
    # (N, 3072) rows are [R plane 1024 | G plane | B plane] -> (N, 3, 32, 32) -> NHWC
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _label_names(raw: bytes, where: str) -> list[str]:
    meta = safe_load(raw, where)
    try:
        names = _get(meta, "label_names")
        if isinstance(names, (str, bytes)):
            raise TypeError("a single string")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise UserError(f"{where}: not a CIFAR meta file (no list of label_names: {type(e).__name__}); "
                        "use the original batches.meta, or delete it to number the classes.") from None


def _read_members(members: dict[str, bytes], where: str) -> Dataset:
    names = _label_names(members["batches.meta"], f"{where}/batches.meta") if "batches.meta" in members else None
    splits = {}
    for split, files in (("train", TRAIN_FILES), ("test", TEST_FILES)):
        present = [f for f in files if f in members]
        if not present:
            continue
        parts = [_decode_batch(members[f], f"{where}/{f}") for f in present]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        splits[split] = (x, y)
    if not splits:
        raise UserError(f"{where}: no CIFAR batch files (data_batch_1..5, test_batch) found; point --data at cifar-10-batches-py/ or the tarball.")
    if names is None:
        names = [str(i) for i in range(int(max(s[1].max() for s in splits.values())) + 1)]
    return Dataset(
        name="cifar10",
        splits={k: check_arrays(x, y, len(names), f"{where} ({k})") for k, (x, y) in splits.items()},
        class_names=names,
        source=str(where),
        checksum="",
    )


def looks_like_cifar(path: Path) -> bool:
    return (path.is_dir() and (path / "batches.meta").exists()) or path.name == TARBALL or path.name.startswith("cifar-10-python")


def load_cifar10_path(path: Path) -> Dataset:
    if path.is_dir():
        members = {p.name: p.read_bytes() for p in path.iterdir() if p.name in TRAIN_FILES + TEST_FILES + ["batches.meta"]}
        ds = _read_members(members, str(path))
        ds.checksum = _checksum_members(members)
    else:
        members = {Path(name).name: data for name, data in iter_archive(path)
                   if Path(name).name in TRAIN_FILES + TEST_FILES + ["batches.meta"]}
        ds = _read_members(members, str(path))
        ds.checksum = sha256_file(path)
    return ds


def _checksum_members(members: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(members):
        h.update(name.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(members[name]).digest())
    return h.hexdigest()


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def load_cifar10(data_dir=None, download_ok: bool = True, url: str = URL) -> Dataset:
    """Find CIFAR-10 in the data directories (folder or tarball); download the tarball if missing."""
    dirs = data_dirs(data_dir)
    for d in dirs:
        if (d / FOLDER / "batches.meta").exists():
            return load_cifar10_path(d / FOLDER)
        if (d / TARBALL).is_file():
            if d == cache_root() / "data" and _md5(d / TARBALL) != MD5:  # clsf's own download, damaged since
                print(f"clsf: warning: the cached download {d / TARBALL} is damaged (MD5 differs); downloading it again.",
                      file=sys.stderr)
                (d / TARBALL).unlink()
                continue
            return load_cifar10_path(d / TARBALL)
    if not download_ok:
        raise UserError(f"CIFAR-10 not found in {', '.join(map(str, dirs))}; put {TARBALL} there or allow the download.")
    target = dirs[0] / TARBALL
    download(url, target, MD5)
    return load_cifar10_path(target)
