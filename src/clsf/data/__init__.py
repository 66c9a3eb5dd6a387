"""Data layer: every source becomes a `Dataset` of uint8 NHWC images and int64 labels.

`load_dataset(NAME_OR_PATH)` picks the loader:
  cifar10            canonical python batches (folder or tarball), downloaded with an MD5 check
  mnist, fashion-mnist  IDX .gz files or a keras-style .npz
  cifar10-sample     a small real CIFAR-10 sample shipped inside the package (the default)
  synthetic[:opts]   seeded random images, for tests
  a path             a CIFAR folder/tarball, an .npz, IDX folder, or an image folder / .zip / .tar(.gz)
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from clsf.data.base import Dataset, Split
from clsf.errors import UserError

NAMES = ("cifar10", "mnist", "fashion-mnist", "cifar10-sample", "synthetic")
SAMPLE = "cifar10-sample"


def sample_path() -> Path:
    return Path(str(resources.files("clsf.data") / "assets" / "cifar10-sample.zip"))


def load_dataset(data: str, data_dir=None, channels: int | None = None, image_size=None,
                 skip_bad: bool = False, stream: bool | None = False) -> Dataset:
    """`stream`: an image folder's images stay on disk (clsf.data.stream); None decides by size."""
    ds = _load(data, data_dir, channels, image_size, skip_bad, stream)
    return conform(ds, channels, image_size)


def conform(ds: Dataset, channels: int | None, image_size) -> Dataset:
    """Arrays of another size or channel count than asked (CIFAR batches, .npz, IDX files) resized
    (bilinear, as image folders are) and converted (gray <-> RGB as Pillow does), so `--image-size` and
    `--channels` mean the same for every source; refused beforehand when the result would not fit."""
    from clsf.data.base import check_arrays, usable_memory
    from clsf.data.stream import Files

    if not ds.splits or any(isinstance(sp.x, Files) for sp in ds.splits.values()):
        return ds  # streamed folders are read at their own size
    h, w, c = ds.image_shape
    size = tuple(image_size) if image_size else (h, w)
    c2 = channels or c
    if (size, c2) == ((h, w), c):
        return ds
    n = sum(len(sp) for sp in ds.splits.values())
    need = n * size[0] * size[1] * c2
    if need > 0.4 * usable_memory():
        raise UserError(f"{ds.source}: {n:,} images at {size[0]}x{size[1]}x{c2} would take {need / 2**30:.1f} GiB; "
                        "resize fewer (data.train_subset / test_subset) or to a smaller --image-size.")
    from clsf.data.folder import image_to_array

    from PIL import Image

    def convert(x):
        out = np.empty((len(x), *size, c2), np.uint8)
        for i, img in enumerate(x):
            out[i] = image_to_array(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img), c2, size)
        return out

    ds.splits = {k: check_arrays(convert(sp.x), sp.y, ds.num_classes, f"{ds.source} ({k})") for k, sp in ds.splits.items()}
    ds.notes = {**ds.notes, "converted": f"{h}x{w}x{c} -> {size[0]}x{size[1]}x{c2}"}
    return ds


def _load(data: str, data_dir, channels: int | None, image_size, skip_bad: bool, stream: bool | None) -> Dataset:
    from clsf.data import cifar, folder, mnist, synthetic

    if stream and (data in NAMES or data.startswith("synthetic:") or not Path(data).expanduser().is_dir()):
        raise UserError(f"data.stream=true streams image folders (a directory); '{data}' is loaded in memory — "
                        "leave data.stream out.")
    if data == "cifar10":
        return cifar.load_cifar10(data_dir)
    if data in ("mnist", "fashion-mnist"):
        return mnist.load_mnist(data, data_dir)
    if data == SAMPLE:
        ds = folder.load_image_folder(sample_path(), channels, image_size, skip_bad)
        ds.name = SAMPLE
        return ds
    if data == "synthetic" or data.startswith("synthetic:"):
        return synthetic.make_synthetic(data)

    path = Path(data).expanduser()
    if not path.exists() and not path.is_absolute():  # a relative path: also under --data-dir and $CLSF_DATA
        from clsf.data.paths import data_dirs

        path = next((d / path for d in data_dirs(data_dir) if (d / path).exists()), path)
    if not path.exists():
        if "/" not in data and "\\" not in data and "." not in data:
            raise UserError(f"unknown dataset '{data}'; use one of {', '.join(NAMES)} or a path to your data.")
        raise UserError(f"data path '{data}' does not exist; check the path (or use one of {', '.join(NAMES)}; a "
                        "relative path is also looked for under --data-dir and $CLSF_DATA).")
    if path.is_dir() or path.name.endswith((".zip", ".tar", ".tar.gz", ".tgz")):
        if cifar.looks_like_cifar(path):
            return cifar.load_cifar10_path(path)
        if path.is_dir() and mnist._find_idx(path, mnist.IDX_FILES["train"][0]):
            return mnist.load_idx_folder(path, path.name, mnist.MNIST_CLASSES)
        from clsf.data.stream import load_folder

        return load_folder(path, stream, channels, image_size, skip_bad)
    if path.suffix == ".npz":
        names = mnist.FASHION_CLASSES if "fashion" in path.name else None
        return mnist.load_npz(path, path.stem, names)
    raise UserError(
        f"don't know how to read '{data}'; give a folder, .zip, .tar(.gz), .npz or CIFAR batches."
    )


@dataclass
class Prepared:
    """The three splits a run uses, after the held-out test split, the seeded validation split and subsets."""

    train: Split
    val: Split | None
    test: Split | None
    dataset: Dataset
    held_out: dict | None = None  # the test split taken from the training images (data.test_split), as recorded


TEST_SPLIT_SEED = 20222  # every run of a dataset holds out the same test images, whatever its seed (compare's seeds too)


def prepare(ds: Dataset, val_split: float = 0.2, seed: int = 0, train_subset: int | None = None,
            test_subset: int | None = None, val_subset: int | None = None, test_split: float = 0.0) -> Prepared:
    """`test_split`: for a dataset without a test split (a folder of class folders), the share of its
    images held out as one — stratified, with TEST_SPLIT_SEED — before the validation split is taken."""
    from clsf.data.split import hold_out_test, subset, train_val_split

    if "train" not in ds.splits or len(ds["train"]) == 0:
        raise UserError(f"{ds.source}: has no training images; add a train/ folder (or the training files) "
                        "with at least one image per class.")
    train, test, held = ds["train"], ds.splits.get("test"), None
    if test is None and test_split > 0:
        train, test, held = hold_out_test(train, test_split, TEST_SPLIT_SEED, ds.checksum)
    train, val = train_val_split(train, val_split, seed)
    train = subset(train, train_subset, seed, "train")
    val = subset(val, val_subset, seed, "val") if val is not None else None
    test = subset(test, test_subset, seed, "test") if test is not None else None
    return Prepared(train, val, test, ds, held)
