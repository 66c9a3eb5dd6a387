"""Image folders: `<root>/<class>/*.{png,jpg,jpeg,bmp}`, optionally under `train/` and `test/`.

The root may be a directory, a `.zip` or a `.tar(.gz)`. Images are decoded once with Pillow and the
result is cached as one `.npz` keyed by the sha256 of the source's content and the decode options,
so a changed source is decoded again and an unchanged one loads in a second.

Explicit conversions: every image is converted to the declared channels (1 = grayscale "L",
3 = "RGB"; RGBA loses its alpha, palette images are expanded). When `channels` is not given it is 1
if every image is grayscale, else 3. Images of different sizes are refused unless `image_size` is
given, in which case each is resized (bilinear) to it.

Order: the files are listed sorted (so by class), then each split is put in a fixed class-mixed order,
`mixed_order`: the same on every machine, stored so in the decoded cache, named by `clsf data info`,
and the same for a folder streamed from disk. Class-sorted arrays are a trap: Keras'
`validation_split=0.2` takes the last 20%, which in a sorted CIFAR-10 folder is two classes never
trained on (the classic tutorial's script, 0.67 on mixed data, scored 0.54 so).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from clsf.data.archive import iter_archive
from clsf.data.base import Dataset, check_arrays
from clsf.data.paths import cache_root
from clsf.errors import UserError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}
SPLIT_DIRS = ("train", "test")
CACHE_VERSION = 3  # 2: entries carry a sha256 of their arrays; 3: splits in mixed_order
ORDER_SEED = 20221  # the seed of every folder's class-mixed order; a constant, not the run's seed
ORDER_NOTE = f"class-mixed (a fixed permutation of the sorted file list, seed {ORDER_SEED})"


def mixed_order(n: int, split: str) -> np.ndarray:
    """(n,) int64: the positions, in a split's sorted file list, of its images in load order."""
    return np.random.default_rng([ORDER_SEED, SPLIT_DIRS.index(split)]).permutation(n).astype(np.int64)


def _list_directory(root: Path) -> list[tuple[str, Path]]:
    return sorted(
        (p.relative_to(root).as_posix(), p) for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS
    )


def _strip_common_root(names: list[str]) -> str:
    """'cifar10-jpeg/train/cat/0.jpg' -> prefix 'cifar10-jpeg/' when every entry shares it and the
    layout below it still has class folders."""
    prefix = ""
    while True:
        heads = {n[len(prefix):].split("/", 1)[0] for n in names}
        depth_ok = all(n[len(prefix):].count("/") >= 2 for n in names)
        if len(heads) == 1 and depth_ok:
            prefix += heads.pop() + "/"
        else:
            return prefix


def _assign(names: list[str], where: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Map each relative name to (split, class, name); return entries and sorted class names."""
    prefix = _strip_common_root(names)
    rel = [n[len(prefix):] for n in names]
    has_splits = all(r.split("/", 1)[0] in SPLIT_DIRS and r.count("/") >= 2 for r in rel)
    entries = []
    for full, r in zip(names, rel):
        parts = r.split("/")
        if has_splits:
            split, cls = parts[0], parts[1]
        elif len(parts) >= 2:
            split, cls = "train", parts[0]
        else:
            raise UserError(
                f"{where}: image '{full}' is not inside a class folder; lay images out as "
                "<root>/<class>/<image> (optionally under train/ and test/)."
            )
        entries.append((split, cls, full))
    classes = sorted({c for _, c, _ in entries})
    for c in classes:  # class names become labels in reports, exports and JSON: text, not a file system's raw bytes
        try:
            c.encode("utf-8")
        except UnicodeEncodeError:
            shown = c.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UserError(f"{where}: the class folder name '{shown}' is not valid UTF-8 text; rename the folder "
                            "(its name is the class's label).") from None
    if len(classes) < 2:
        raise UserError(
            f"{where}: found a single class folder ('{classes[0]}'); a classifier needs at least two — "
            "point --data at the folder that holds one sub-folder per class."
        )
    return entries, classes


def decode_image(raw: bytes, name: str, channels: int | None):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
    except UnidentifiedImageError:
        raise ValueError("not a PNG, JPEG or BMP image") from None
    except Image.DecompressionBombError:  # PIL's limit (89 million pixels by default), before it allocates
        raise ValueError(f"it declares more than {Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?)") from None
    except (OSError, ValueError, SyntaxError) as e:  # a truncated or damaged file of a known format
        raise ValueError(str(e) or type(e).__name__) from None
    return img


def is_grayscale(img) -> bool:
    """A decoded image with one channel of values (what `channels`, left out, counts as 1)."""
    return img.mode in ("L", "1", "I", "I;16", "LA")


def image_to_array(img, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    if img.mode in ("P", "PA"):  # palette: expand before the declared conversion
        img = img.convert("RGBA")
    if img.mode != mode:
        img = img.convert(mode)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _checksum(source: Path) -> tuple[str, list[tuple[str, bytes]] | None]:
    """sha256 of the source's content; for a directory also the entries read on the way."""
    h = hashlib.sha256()
    if source.is_dir():
        items = []
        for rel, p in _list_directory(source):
            raw = p.read_bytes()
            h.update(os.fsencode(rel) + b"\0" + hashlib.sha256(raw).digest())  # a name's bytes as on disk
            items.append((rel, raw))
        return h.hexdigest(), items
    with open(source, "rb") as f:  # an archive: hash its bytes, unpack only on a cache miss
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest(), None


def load_image_folder(source: Path, channels: int | None = None, image_size=None,
                      skip_bad: bool = False, use_cache: bool = True, quiet: bool = True) -> Dataset:
    checksum, items = _checksum(source)
    size = tuple(image_size) if image_size else None
    key_src = json.dumps([CACHE_VERSION, checksum, channels, size, skip_bad]).encode()
    cache_file = cache_root() / "decoded" / (hashlib.sha256(key_src).hexdigest()[:32] + ".npz")
    if use_cache and cache_file.exists():
        try:
            return _from_cache(cache_file, source, checksum)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            # truncated, emptied or bit-flipped: discarded and rebuilt from the source, never trusted
            print(f"clsf: warning: the decoded-data cache {cache_file} is damaged ({type(e).__name__}: "
                  f"{str(e)[:80]}); rebuilding it from {source}.", file=sys.stderr)
            cache_file.unlink(missing_ok=True)
    if items is None:
        items = sorted((n, b) for n, b in iter_archive(source) if Path(n).suffix.lower() in IMAGE_EXTS)
    if not items:
        raise UserError(
            f"{source}: no images ({', '.join(sorted(IMAGE_EXTS))}) found; point --data at a folder "
            "laid out as <root>/<class>/<image>."
        )
    entries, classes = _assign([n for n, _ in items], str(source))
    raw_by_name = dict(items)
    decoded, bad = [], []
    for split, cls, name in entries:
        try:
            decoded.append((split, cls, name, decode_image(raw_by_name[name], name, channels)))
        except ValueError as e:
            if not skip_bad:
                raise UserError(
                    f"{source}: cannot decode image '{name}' ({e}); remove or replace it, or pass "
                    "--skip-bad to skip unreadable images."
                ) from None
            bad.append(name)
    if not decoded:
        raise UserError(f"{source}: none of the {len(entries)} images could be decoded.")

    if channels is None:
        channels = 1 if all(is_grayscale(img) for *_, img in decoded) else 3
    if size is None:
        sizes = Counter(img.size for *_, img in decoded)
        if len(sizes) > 1:
            (a, _), (b, _) = sizes.most_common(2)
            odd = next(name for _, _, name, img in decoded if img.size == b)
            raise UserError(
                f"{source}: images have different sizes ({a[1]}x{a[0]} and {b[1]}x{b[0]}, e.g. '{odd}'); "
                "pass --image-size HxW to resize them all."
            )
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in SPLIT_DIRS:
        rows = [(index[cls], img) for s, cls, _, img in decoded if s == split]
        if rows:
            rows = [rows[i] for i in mixed_order(len(rows), split)]
            x = np.stack([image_to_array(img, channels, size) for _, img in rows])
            y = np.array([c for c, _ in rows], dtype=np.int64)
            splits[split] = check_arrays(x, y, len(classes), f"{source} ({split})")
    notes = {"order": ORDER_NOTE, **({"skipped_bad_images": len(bad)} if bad else {})}
    ds = Dataset(source.name, splits, classes, str(source), checksum, notes)
    if use_cache:
        _write_cache(cache_file, ds)
    return ds


def _write_cache(path: Path, ds: Dataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{k}_{s}": getattr(v, k) for s, v in ds.splits.items() for k in ("x", "y")}
    meta = json.dumps({"class_names": ds.class_names, "notes": ds.notes, "sha256": _arrays_sha256(arrays)})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(meta), **arrays)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _from_cache(path: Path, source: Path, checksum: str) -> Dataset:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files if k != "meta"}
    if _arrays_sha256(arrays) != meta.get("sha256"):
        raise ValueError("its content does not match its checksum")
    splits = {s: check_arrays(arrays[f"x_{s}"], arrays[f"y_{s}"], len(meta["class_names"]), str(path))
              for s in SPLIT_DIRS if f"x_{s}" in arrays}
    return Dataset(source.name, splits, meta["class_names"], str(source), checksum, meta["notes"])
