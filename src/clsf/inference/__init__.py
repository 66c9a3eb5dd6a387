"""`clsf predict SOURCE PATH...`: class probabilities for image files, folders and globs.

SOURCE is a run directory (its checkpoint, in the engine it trained with) or an export folder
written by `clsf export` (its own runtime: onnxruntime, torch.jit, tf.saved_model, keras). Images
stream through in batches (decoded, converted to the model's channels and resized to its input
size), so a folder of any size runs in bounded memory. A file that cannot be decoded stops the
command naming it, or with `skip_bad` is reported and skipped.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from clsf.data.folder import IMAGE_EXTS, decode_image, image_to_array
from clsf.metrics import softmax
from clsf.errors import UserError
from clsf.run.files import read_json
from clsf.run.rundir import RunDir


class Model:
    """What predict needs of a model: class names, input shape (H, W, C), probabilities of a uint8 batch."""

    def __init__(self, source: str | Path, which: str | None = None):
        source = Path(source)
        if (source / "clsf.json").is_file():  # an export folder
            from clsf.exports import FILES, load_runtime

            try:
                info = read_json(source / "clsf.json")
                self.names, self.shape = list(info["class_names"]), tuple(int(v) for v in info["input"]["shape"][1:])
                if info["format"] not in FILES or len(self.shape) != 3 or not self.names:
                    raise ValueError("unknown format or shape")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
                raise UserError(f"{source / 'clsf.json'} is damaged ({type(e).__name__}); export the run again.") from None
            try:
                run, self.describe = load_runtime(info["format"], source / info["file"])
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - a refused or damaged file: say which and why, in one line
                raise UserError(f"{source / info['file']} could not be loaded ({type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0][:160]}); export the run again.") from None
            logits = info["output"] == "logits"
            self._probs = lambda x: softmax(run(x.astype(np.float32))) if logits else run(x.astype(np.float32))
            self.describe = f"{info['format']} export ({self.describe})"
            return
        from clsf.run.setup import checkpoint_engine

        if source.is_file() and (source.parent / "clsf.json").is_file():  # a file inside an export folder
            raise UserError(f"{source} is a file of the export folder {source.parent}; pass the folder: "
                            f"clsf predict {source.parent} IMAGES.")
        if not RunDir.is_run(source):
            raise UserError(f"{source} is not a clsf run directory (no {RunDir.CONFIG}) nor an export folder (no clsf.json); "
                            "pass the folder `clsf train` printed or the one `clsf export` wrote.")
        run = RunDir.open(source, None)
        which = run.model_checkpoint(which)  # the run's model unless another checkpoint is asked for
        cfg = run.validate(which)
        self.names, self.shape = run.class_names, run.image_shape
        engine = checkpoint_engine(run, cfg, which)
        self._probs = lambda x: softmax(engine.predict_logits(x))
        self.describe = f"{run} {run.describe_checkpoint(which)} ({cfg.engine})"

    def probabilities(self, x: np.ndarray) -> np.ndarray:  # (N, H, W, C) uint8 -> (N, K)
        return self._probs(x)


def check_options(batch_size: int, top_k: int) -> None:
    """predict's numbers, refused before anything is loaded."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} must be at least 1 (images predicted at a time).")
    if top_k < 1:
        raise UserError(f"--top-k {top_k} must be at least 1 (classes shown per image).")


def expand(paths: list[str]) -> list[Path]:
    """Files, folders (their images, recursively) and globs, in the order given, each file once."""
    out: list[Path] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
        elif p.is_file():
            found = [p]
        elif glob.has_magic(text):
            found = sorted(Path(f) for f in glob.glob(text, recursive=True) if Path(f).is_file())
            if not found:
                raise UserError(f"'{text}' matches no files; check the pattern.")
        elif p.exists():
            raise UserError(f"'{text}' is not a regular file or folder; give image files, folders or quoted globs.")
        else:
            raise UserError(f"'{text}' does not exist; give image files, folders or quoted globs like 'photos/*.jpg'.")
        if not found:
            raise UserError(f"'{text}' holds no images ({', '.join(sorted(IMAGE_EXTS))}); check the path.")
        out += found
    return list(dict.fromkeys(out))


def predict(source: str | Path, paths: list[str] | str, top_k: int = 3, batch_size: int = 256,
            skip_bad: bool = False, checkpoint: str | None = None) -> list[dict]:
    """What `clsf predict` prints, as data: for each image (files, folders searched recursively, globs),
    {"path": str, "top": [{"class": name, "p": probability}, ...]} with the `top_k` most probable
    classes, from a run directory (its checkpoint, or `checkpoint` "last"/"best") or an export folder.

        clsf.predict("runs/20261202-...-seed-cnn-torch-cifar10", ["photos/"], top_k=1)
    """
    check_options(batch_size, top_k)
    files = expand([paths] if isinstance(paths, (str, Path)) else list(paths))
    model = Model(source, checkpoint)
    return [top_classes(path, p, model.names, top_k) for path, p in predict_batches(model, files, batch_size, skip_bad)]


def top_classes(path: Path, p: np.ndarray, names: list[str], top_k: int, digits: int | None = None) -> dict:
    """{"path", "top": [{"class", "p"}]}: the `top_k` most probable classes of p (K,), ties in class order."""
    top = np.argsort(-p, kind="stable")[:max(1, min(top_k, len(names)))]
    return {"path": str(path), "top": [{"class": names[i], "p": float(p[i]) if digits is None else round(float(p[i]), digits)}
                                       for i in top]}


def predict_batches(model: Model, files: list[Path], batch_size: int = 256, skip_bad: bool = False,
                    on_skip=None, on_batch=None) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield (file, class probabilities) in file order, `batch_size` images at a time."""
    h, w, c = model.shape
    for start in range(0, len(files), batch_size):
        batch, arrays = [], []
        for f in files[start:start + batch_size]:
            try:
                arrays.append(image_to_array(decode_image(f.read_bytes(), str(f), None), c, (h, w)))
                batch.append(f)
            except (ValueError, OSError) as e:
                why = str(e)
                if not skip_bad:
                    raise UserError(f"cannot read image '{f}' ({why}); fix or remove it, or pass --skip-bad.") from None
                if on_skip:
                    on_skip(f, why)
        if arrays:
            yield from zip(batch, model.probabilities(np.stack(arrays)))  # (n, H, W, C) uint8 -> (n, K)
        if on_batch:
            on_batch(min(start + batch_size, len(files)), len(files))


def write(results, names: list[str], fmt: str, top_k: int, out=None) -> int:
    """Print results as a table, CSV or a JSON array, as they come; return how many."""
    import csv
    import json

    out = out or sys.stdout
    n = 0
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        k = max(1, min(top_k, len(names)))  # the columns: as many classes as top_classes gives each row
        writer.writerow(["path"] + [f"{c}{i}" for i in range(1, k + 1) for c in ("class", "p")])
    if fmt == "json":
        out.write("[")
    for path, p in results:
        item = top_classes(path, p, names, top_k, digits=6 if fmt == "json" else None)
        if fmt == "table":
            out.write(f"{path}: " + ", ".join(f"{t['class']} {t['p']:.3f}" for t in item["top"]) + "\n")
        elif writer:
            writer.writerow([str(path)] + [v for t in item["top"] for v in (t["class"], f"{t['p']:.6f}")])
        else:
            out.write(("," if n else "") + "\n  " + json.dumps(item))
        out.flush()
        n += 1
    if fmt == "json":
        out.write("\n]\n")
    return n
