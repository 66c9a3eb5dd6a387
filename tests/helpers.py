"""Helpers the tests share, imported as `from helpers import ...` (pytest puts tests/ on the path):
files in the canonical dataset formats, the engine list from the registry, a tiny run's config."""

import io
import struct
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # the real datasets, for slow tests
TINY = ["model.args.widths=[4, 4]", "model.args.dense=8"]  # seed-cnn a few channels wide: fast on 2 cores
MARKS = {"tensorflow": pytest.mark.tf, "torch": pytest.mark.torch, "jax": pytest.mark.jax}  # framework -> mark


def engine_params(names=None) -> list:
    """Every registered engine that runs inside the test process (or `names`) as a pytest parameter
    marked with its framework. Keras on a backend other than TensorFlow needs a process of its own
    (Keras holds one backend per process, and the tests import it on TensorFlow): those engines keep
    the same contract in test_keras_backends.py, which checks that the two lists cover the registry."""
    from clsf.engines import ENGINES

    return [pytest.param(e.name, marks=MARKS[e.requires]) if e.requires in MARKS else e.name
            for e in ENGINES.values() if (names is None and e.keras_backend in (None, "tensorflow"))
            or (names is not None and e.name in names)]


def long(params, *names) -> list:
    """`params` with those whose value is in `names` marked `long`: out of the default suite (its 12
    minutes on 2 cores), run by CI's second step (`-m "(extra or long) and not slow"`)."""
    out = []
    for p in params:
        p = p if hasattr(p, "values") else pytest.param(p)
        out.append(pytest.param(*p.values, marks=[*p.marks, pytest.mark.long], id=p.id) if p.values[0] in names else p)
    return out


def tiny_config(engine: str, runs_dir, data: str, *overrides, epochs: int = 2, small=TINY, **flags):
    """A run's config on synthetic data, small enough for the default suite."""
    from clsf.config import build_config

    return build_config(flags={"engine": engine, "epochs": epochs, "runs_dir": str(runs_dir), "data": {"name": data},
                               **flags}, overrides=list(small) + list(overrides))


def png_bytes(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, fmt)
    return buf.getvalue()


def write_cifar_batch(path: Path, x: np.ndarray, y: list[int]) -> None:
    """x (N,32,32,3) uint8 -> the canonical CHW-flattened pickle with bytes keys."""
    d = {b"batch_label": b"test", b"labels": list(y),
         b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"filenames": [b"f%d.png" % i for i in range(len(y))]}
    path.write_bytes(pickle.dumps(d, protocol=2))


def make_cifar_folder(root: Path, n: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = list(rng.integers(0, 10, n))
        write_cifar_batch(root / name, x, y)
        arrays[name] = (x, np.array(y))
    meta = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return arrays


def make_image_tree(root: Path, classes=("cat", "dog"), per_class=3, size=(8, 8), splits=("train", "test"), seed=0):
    """Write PNGs as <root>/<split>/<class>/i.png; return {split: (x, y)} in file order (sorted by class;
    clsf loads a split in clsf.data.folder.mixed_order of it)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in splits:
        xs, ys = [], []
        for ci, cls in enumerate(sorted(classes)):
            d = root / split / cls if split else root / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                (d / f"{i}.png").write_bytes(png_bytes(a))
                xs.append(a)
                ys.append(ci)
        out[split or "train"] = (np.stack(xs), np.array(ys))
    return out


def zip_dir(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(src.parent).as_posix())
    return dest


def tar_dir(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(src, arcname=src.name)
    return dest


# -- TensorBoard event files read from first principles (clsf writes them without TensorBoard; with the
#    tensorboard extra, tests/test_engines.py also reads them with TensorBoard's own reader)

def _masked_crc(data: bytes) -> int:
    from clsf.run.tensorboard import masked_crc

    return masked_crc(data)


def read_scalars(path) -> list[tuple[int, str, float]]:
    """(step, tag, value) scalar records of an events file, or of every events file in a folder in the
    order written, checking every CRC and applying purge markers as TensorBoard does."""
    path = Path(path)
    files = sorted(path.glob("events.out.tfevents.*")) if path.is_dir() else [path]
    out = []
    for f in files:
        data = f.read_bytes()
        i = 0
        while i < len(data):
            if len(data) - i < 12 or len(data) - i < 16 + struct.unpack_from("<Q", data, i)[0]:
                break  # a record cut short by a kill (records are appended): TensorBoard stops there too
            (n,) = struct.unpack_from("<Q", data, i)
            assert struct.unpack_from("<I", data, i + 8)[0] == _masked_crc(data[i:i + 8]), "bad length crc"
            body = data[i + 12:i + 12 + n]
            assert struct.unpack_from("<I", data, i + 12 + n)[0] == _masked_crc(body), "bad data crc"
            i += 16 + n
            step, scalars, start = _parse_event(body)
            if start:
                out = [r for r in out if r[0] < step]
            out.extend(scalars)
    return out


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def _fields(b: bytes):
    i = 0
    while i < len(b):
        key, i = _read_varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(b, i)
        elif wire == 1:
            v, i = b[i:i + 8], i + 8
        elif wire == 5:
            v, i = b[i:i + 4], i + 4
        else:
            n, i = _read_varint(b, i)
            v, i = b[i:i + n], i + n
        yield num, v


def _parse_event(body: bytes):
    step, out, start = 0, [], False
    for num, v in _fields(body):
        if num == 2:
            step = v
        elif num == 7:
            start = dict(_fields(v)).get(1) == 1
        elif num == 5:
            for vnum, value in _fields(v):
                if vnum == 1:
                    tag, val = "", None
                    for fnum, fv in _fields(value):
                        if fnum == 1:
                            tag = fv.decode()
                        elif fnum == 2:
                            val = struct.unpack("<f", fv)[0]
                    if val is not None:  # a scalar (images and plugin data are not)
                        out.append((step, tag, val))
    return step, out, start
