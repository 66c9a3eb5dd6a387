"""A run directory checked before a command changes anything: every file it will read parses and
holds what it must (config, model file, environment, the checkpoint's meta and weights, logs and
results), no file is a symbolic link, and predictions.npz has its schema. Damage is one line naming
the file (UserError); nothing is written here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clsf.errors import UserError

if TYPE_CHECKING:
    from clsf.config import Config
    from clsf.models.spec import ModelSpec


def validate(run, which: str | None = None) -> Config:
    """Every file a command reads, checked before it changes anything: config, model file and
    environment parse and hold what they must, the checkpoint's meta and weights read back, and
    the logs and results that exist parse. Damage is one line naming the file (UserError)."""
    _no_links(run.path)
    cfg = run.config()
    spec = None
    if run.has_model_file():
        try:
            spec = run.model_spec()
        except (UserError, ValueError, TypeError, AttributeError, KeyError) as e:
            raise run.damaged(run.MODEL, str(e).split(";")[0][:120] or type(e).__name__) from None
    kind = run.kind()
    if kind.classifies:
        run.data_facts()
    if which is not None:
        run.meta(which)
        ckpt = run.checkpoint(which)
        if kind.classifies:  # the model's weights, and with optim.ema the weights being trained
            paths = [ckpt.weights] + [ckpt.train_weights] * ckpt.train_weights.exists()
        else:  # another kind's own arrays (a GAN's two networks), read as arrays
            paths, spec = [ckpt.folder / name for name in kind.files], None
        for path in paths:
            _check_weights(run, which, path, spec)
    run.metrics()
    run.final()
    run.predictions()  # where it exists: the one reader, which names the file if it is damaged
    return cfg


def _no_links(path: Path) -> None:
    """A symbolic link inside a run directory is damage: writing a checkpoint through one would
    change files outside the run (and a swap of folders would leave links behind)."""
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(folder) / name
            if p.is_symlink():
                raise UserError(f"{p} is a symbolic link (to {os.readlink(p)}); a run directory holds its own files — "
                                "replace the link with a copy of what it points to; nothing was changed.")


def _check_npz(run, name: str, spec: ModelSpec | None = None) -> None:
    """An .npz of the run readable as arrays (its zip directory and every array's header, nothing
    decompressed); with `spec`, holding exactly the model's weights, each of its shape."""
    import zipfile

    from clsf.data.base import npz_headers

    path = run.path / name
    if not path.exists():
        raise run.damaged(name, "it is missing")
    try:
        headers = npz_headers(path)
        if not headers:
            raise ValueError("it holds no arrays")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise run.damaged(name, str(e).splitlines()[0][:100] if str(e) else type(e).__name__) from None
    if spec is not None:
        from clsf.models.transfer import neutral_shapes

        want = neutral_shapes(spec)
        missing, extra = sorted(set(want) - set(headers)), sorted(set(headers) - set(want))
        if missing or extra:
            raise run.damaged(name, f"it lacks {missing[0]}" if missing else f"it holds {extra[0]}, which the model has not")
        wrong = next((k for k in want if headers[k][0] != want[k]), None)
        if wrong:
            raise run.damaged(name, f"{wrong} has shape {headers[wrong][0]} where the model's is {want[wrong]}")


def _check_weights(run, which: str, path: Path, spec: ModelSpec | None) -> None:
    """A checkpoint's weights file against the run's model; where the model file is what changed since
    the checkpoint was written (its recorded hash differs), that file is the one named."""
    try:
        _check_npz(run, str(path.relative_to(run.path)), spec)
    except UserError:
        from clsf.models.yaml_spec import model_digest

        recorded = (run.meta(which).get("fingerprints") or {}).get("model")
        if spec is not None and recorded not in (None, model_digest(spec)):
            raise UserError(f"{run.path / run.MODEL} changed since checkpoints/{which} was written, so its weights no "
                            "longer fit it; restore the file (or start a new run with the new model).") from None
        raise


PREDICTIONS_SCHEMA = {"logits": 2, "labels": 1, "mistake_index": 1, "mistake_images": 4}  # array: dimensions


def predictions_problem(arrays: dict, classes: int | None) -> str | None:
    """What is wrong with predictions.npz's arrays, or None: test logits (N, K), labels (N,) in 0..K-1,
    the mistakes' indices (M,) into them and their images (M, H, W, C) uint8."""
    for key, ndim in PREDICTIONS_SCHEMA.items():
        if key not in arrays:
            return f"it lacks {key}"
        if arrays[key].ndim != ndim:
            return f"its {key} has {arrays[key].ndim} dimensions, not {ndim}"
    logits, labels, index, images = (arrays[k] for k in PREDICTIONS_SCHEMA)
    n, k = logits.shape
    if not np.issubdtype(logits.dtype, np.floating) or (classes is not None and k != classes):
        return f"its logits are {logits.dtype} of {k} classes" + (f", not {classes}" if classes is not None else "")
    if not np.issubdtype(labels.dtype, np.integer) or len(labels) != n or (n and not 0 <= labels.min() <= labels.max() < k):
        return "its labels do not match its logits"
    if not np.issubdtype(index.dtype, np.integer) or (len(index) and not 0 <= index.min() <= index.max() < n):
        return "its mistake_index points outside the test split"
    if images.dtype != np.uint8 or len(images) != len(index):
        return "its mistake_images do not match mistake_index"
    return None
