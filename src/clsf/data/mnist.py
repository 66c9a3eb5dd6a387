"""MNIST and Fashion-MNIST: IDX files (`*-idx3-ubyte(.gz)`) or a keras-style `mnist.npz`.

IDX layout: 2 zero bytes, a dtype code (0x08 = uint8), the number of dimensions, then big-endian
uint32 sizes and the raw data.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np

from clsf.data.base import Dataset, check_arrays, check_npz_size, sha256_file
from clsf.data.paths import data_dirs
from clsf.errors import UserError

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle boot"]
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def parse_idx(raw: bytes, where: str) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{where}: not an IDX file of uint8 (bad magic number); use the original MNIST files.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{where}: IDX header is truncated; re-download the file.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise UserError(f"{where}: IDX file holds {len(raw) - header} bytes of data but its header says {shape}; the file is truncated or corrupt.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"{path}: cannot read ({e}); re-download the file.") from None


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_folder(folder: Path, name: str, class_names: list[str]) -> Dataset:
    splits, h = {}, hashlib.sha256()
    for split, (img_stem, lbl_stem) in IDX_FILES.items():
        img, lbl = _find_idx(folder, img_stem), _find_idx(folder, lbl_stem)
        if img is None and lbl is None:
            continue
        if img is None or lbl is None:
            missing = img_stem if img is None else lbl_stem
            raise UserError(f"{folder}: found only half of the {split} split; add {missing}.gz beside the other file.")
        x, y = parse_idx(_read(img), str(img)), parse_idx(_read(lbl), str(lbl))
        h.update(sha256_file(img).encode() + sha256_file(lbl).encode())
        splits[split] = check_arrays(x, y, len(class_names), f"{folder} ({split})")
    if not splits:
        raise UserError(f"{folder}: no IDX files (train-images-idx3-ubyte.gz, ...) found.")
    return Dataset(name, splits, class_names, str(folder), h.hexdigest())


def load_npz(path: Path, name: str = "mnist", class_names: list[str] | None = None) -> Dataset:
    check_npz_size(path, "use a smaller file, or an image folder streamed from disk (data.stream=true)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e}); re-download it.") from None
    splits = {}
    for split in ("train", "test"):
        if f"x_{split}" in arrays or f"y_{split}" in arrays:
            if f"x_{split}" not in arrays or f"y_{split}" not in arrays:
                raise UserError(f"{path}: has only one of x_{split}/y_{split}; the file needs both.")
            splits[split] = (arrays[f"x_{split}"], arrays[f"y_{split}"])
    if not splits:
        raise UserError(f"{path}: no x_train/y_train/x_test/y_test arrays; expected keras' mnist.npz layout.")
    if class_names is None:  # no names in the file: classes are 0..max label, with no gaps
        labels = np.concatenate([np.asarray(y).reshape(-1) for _, y in splits.values()]).astype(np.int64)
        if labels.min() < 0:
            raise UserError(f"{path}: labels range over {labels.min()}..{labels.max()}; labels must be 0..K-1.")
        empty = np.flatnonzero(np.bincount(labels) == 0)
        if len(empty):
            raise UserError(
                f"{path}: labels range over 0..{labels.max()} but classes {', '.join(map(str, empty[:5]))}"
                f"{' ...' if len(empty) > 5 else ''} have no images; renumber the labels to 0..K-1."
            )
        class_names = [str(i) for i in range(int(labels.max()) + 1)]
    return Dataset(
        name,
        {k: check_arrays(x, y, len(class_names), f"{path} ({k})") for k, (x, y) in splits.items()},
        class_names, str(path), sha256_file(path),
    )


def load_mnist(name: str, data_dir=None) -> Dataset:
    classes = FASHION_CLASSES if name == "fashion-mnist" else MNIST_CLASSES
    dirs = data_dirs(data_dir)
    for d in dirs:
        for folder in (d / name, d):
            if name == "mnist" and (folder / "mnist.npz").is_file():
                return load_npz(folder / "mnist.npz", name, classes)
            if name == "fashion-mnist" and (folder / "fashion-mnist.npz").is_file():
                return load_npz(folder / "fashion-mnist.npz", name, classes)
            if _find_idx(folder, IDX_FILES["train"][0]) and (folder != d or name == "mnist"):
                return load_idx_folder(folder, name, classes)
    raise UserError(
        f"{name} not found in {', '.join(map(str, dirs))}; put {name}.npz or the four IDX .gz files in "
        f"<data-dir>/{name}/ (or pass --data path/to/{name}.npz)."
    )
