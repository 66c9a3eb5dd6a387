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


def npz_headers(path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} of an .npz, read from each member's npy header without
    decompressing its data: what loading it would allocate, known before anything is allocated.
    Raises ValueError for a member that is not an npy array (or holds Python objects)."""
    import zipfile

    out = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename} is not an array")
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):  # 3.0 differs only in a UTF-8 header, which numpy writes
                    raise ValueError(f"{info.filename} is npy format {version[0]}.{version[1]}")  # for unicode field names
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f, max_header_size=10_000)
            if dtype.hasobject:
                raise ValueError(f"{info.filename} holds Python objects")
            out[info.filename[:-4]] = (tuple(shape), dtype)
    return out


def usable_memory() -> int:
    """Bytes this process can still allocate: the least of the memory the system has available, the
    control group's limit and the address-space limit (a container or `ulimit -v` holds less than
    the machine)."""
    import resource

    bounds = [machine_memory()]
    try:
        with open("/proc/meminfo") as f:
            bounds += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit():
            bounds.append(int(text))
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY:
            bounds.append(soft)
    return min(bounds)


def check_npz_size(path, what: str, share: float = 0.4) -> None:
    """Refuse an .npz whose arrays would take more than `share` of the memory this process can use
    once unpacked (a small compressed file can declare gigabytes), before any is read. A share, not
    all of it: loading, the validation split and batching each hold a copy of some of it."""
    import math
    import zipfile

    try:
        headers = npz_headers(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable .npz file of arrays ({str(e).splitlines()[0][:120]}); re-create or "
                        "re-download it.") from None
    sizes = {k: math.prod(shape) * dtype.itemsize for k, (shape, dtype) in headers.items()}
    total, have = sum(sizes.values()), usable_memory()
    if total > share * have:
        big = max(sizes, key=sizes.get)
        raise UserError(f"{path}: its arrays unpack to {total / 2**30:,.1f} GiB ({big} alone {sizes[big] / 2**30:,.1f} GiB), "
                        f"too much for the {have / 2**30:.1f} GiB of memory this process can use (loading and splitting hold "
                        f"copies); {what}.")
