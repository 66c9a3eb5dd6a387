"""Helpers the tests share, imported as `from helpers import ...` (pytest puts tests/ on the path):
files in the canonical dataset formats, the engine list from the registry, a tiny run's config."""

import io
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
