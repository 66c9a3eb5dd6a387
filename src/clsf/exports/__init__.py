"""`clsf export RUN --format onnx|torchscript|savedmodel|keras`: a run's model for other runtimes.

Every format takes the same input and gives the same output, so a user never has to know how clsf
normalised the data:
  input   float32 (N, H, W, C) raw pixel values 0-255 (the run's image size; any batch size)
  output  logits (N, K), or probabilities with --probabilities (softmax baked in)
The run's normalisation (data.scale, mean/std) is part of the exported graph. The weights are
framework-neutral, so any run exports to any format: torch builds ONNX and TorchScript, Keras
builds SavedModel and .keras. Each export is verified when written: reloaded with its own runtime
(onnxruntime, torch.jit, tf.saved_model, keras with safe_mode) and compared with clsf's logits on
up to 256 test images; more than 1e-4 apart and nothing is left behind. The folder holds the model
and clsf.json (class names, input and output, the verification), which `clsf predict` reads.
"""

from __future__ import annotations

import errno
import importlib.metadata as md
import importlib.util
import shutil
import zipfile
from pathlib import Path

import numpy as np

from clsf.engines import engine_for_format, entry
from clsf.metrics import softmax
from clsf.exports import safety
from clsf.errors import ClsfError, DiskFull, UserError
from clsf.run.files import write_json
from clsf.run.rundir import RunDir

FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "savedmodel": "saved_model", "keras": "model.keras"}
# which engine writes a format: the registry's (clsf.engines), each engine's `export` method
TOLERANCE = 1e-4  # max |exported - clsf| on the verification images
VERIFY_IMAGES = 256


class ExportMismatch(ClsfError):
    """The exported model does not compute what clsf computes (nothing is written)."""


def _version(package: str) -> str:
    for dist in (package, f"{package}-cpu"):  # TensorFlow installs as tensorflow-cpu here
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            pass
    return "unknown version"


def load_runtime(fmt: str, path: Path):
    """The exported model reloaded by its own runtime, as a function of a float32 NHWC batch."""
    if fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            raise UserError("running an ONNX export needs onnxruntime; install it with pip install 'clsf[export]'.")
        import onnxruntime as ort

        raw = _read(path)  # checked, then handed over: the runtime runs the bytes that were checked
        safety.check_onnx(path, raw)
        session = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"images": x})[0], f"onnxruntime {ort.__version__}"
    if fmt == "torchscript":
        import io

        import torch

        raw = _read(path)
        safety.check_torchscript(path, raw)  # before loading: a method that would run on load is refused
        module = torch.jit.load(io.BytesIO(raw), map_location="cpu")
        safety.check_torchscript_graph(path, module)

        def run(x):
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()

        return run, f"torch.jit {torch.__version__}"
    if fmt == "savedmodel":
        from clsf.frameworks import import_tf

        tf = import_tf()
        safety.check_savedmodel(path)
        loaded = tf.saved_model.load(str(path))
        serving = loaded.signatures.get("serving_default")  # the checked signature, not an attribute of the object
        inputs = serving.structured_input_signature[1] if serving is not None else {}
        if serving is None or len(inputs) != 1 or len(serving.structured_outputs) != 1:
            raise UserError(f"{path} has no serving_default signature of one input and one output; export the run again.")
        (key,) = inputs
        return (lambda x: next(iter(serving(**{key: tf.constant(x)}).values())).numpy(),
                f"tf.saved_model {tf.__version__}")
    from clsf.frameworks import import_tf

    import_tf()
    import keras

    from clsf.models.keras import register_custom_layers

    register_custom_layers()  # clsf's own layers, registered so a model using them reloads
    if not zipfile.is_zipfile(path):  # Keras' own message for this is "File not found"
        raise UserError(f"{path} is not a .keras file (a zip archive); export the run again.")
    safety.check_keras(path)
    model = keras.saving.load_model(path, safe_mode=True)  # safe_mode: no Python code from the file
    return lambda x: model(x, training=False).numpy(), f"keras {keras.__version__} (safe_mode)"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}); export the run again.") from None


def _verification_images(run: RunDir, cfg):
    """The images an export is checked on: up to VERIFY_IMAGES of the run's test split (else its
    validation split), or for an imported network (no data of its own) seeded random ones."""
    from clsf.run.imported import verification_images
    from clsf.run.setup import load_data

    images = verification_images(run, 64)
    if images is None:
        prep = load_data(cfg)
        part = prep.test if prep.test is not None else prep.val
        images = part.x[:VERIFY_IMAGES]  # uint8 (n, H, W, C)
    return images


def _write(engine, fmt: str, path: Path, a, b, probabilities: bool, raw: np.ndarray, out: Path) -> None:
    """The engine writes the export; a full disk (an OSError, or TF's ResourceExhaustedError) is exit 5."""
    try:
        engine.export(fmt, path, a, b, probabilities, raw)
    except Exception as e:  # noqa: BLE001 - a full disk reaches here as an OSError, or TF's ResourceExhaustedError
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e):
            raise DiskFull(f"the disk under {out.parent} is full; free space and export again (nothing was written).") from None
        if isinstance(e, OSError):
            raise UserError(f"cannot write the export to {out} ({e.strerror or e}); choose another --out.") from None
        raise


def _swap_in(tmp: Path, out: Path, replace: bool) -> None:
    """The verified folder in place, whole or not at all; `replace`: the earlier export aside first, then gone."""
    old = out.with_name(out.name + ".old")
    try:
        if replace:
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        elif out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise UserError(f"cannot write the export to {out} ({e.strerror or e}); choose another --out.") from None


def export(run: str | Path, fmt: str, out: str | Path | None = None, probabilities: bool = False,
           which: str | None = None, force: bool = False) -> dict:
    """Write RUN's model (or checkpoint `which`) in `fmt` to `out` (default RUN/export/FMT), verified;
    return clsf.json's content. `force`: replace an earlier export there (a folder clsf wrote, holding
    clsf.json), once the new one is verified; any other non-empty folder is refused either way."""
    from clsf.run.setup import checkpoint_engine

    writer = engine_for_format(fmt)  # refuses an unknown format
    run = RunDir.open(run, None)
    which = run.model_checkpoint(which)
    cfg = run.validate(which)
    names, shape = run.class_names, run.image_shape
    out = Path(out) if out else run / "export" / fmt
    replace = force and out.is_dir() and (out / "clsf.json").is_file()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not replace:
        hint = "--force replaces only an export clsf wrote (a folder with clsf.json)" if force else \
            "--force replaces an earlier export"
        raise UserError(f"{out} exists and is not empty; remove it, choose another --out, or ({hint}).")
    trained_with, cfg.engine, filename = cfg.engine, writer, FILES[fmt]
    images = _verification_images(run, cfg)
    engine = checkpoint_engine(run, cfg, which)
    reference = engine.predict_logits(images)  # (n, K) what clsf computes
    if probabilities:
        reference = softmax(reference)
    a, b = engine.pre.affine(shape[2])

    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot write the export into {out.parent} ({e.strerror or e}); choose another --out.") from None
    try:
        raw = images.astype(np.float32)  # the exported model's input: raw pixels, 0-255
        _write(engine, fmt, tmp / filename, a, b, probabilities, raw, out)
        try:
            predict, runtime = load_runtime(fmt, tmp / filename)
            got = np.concatenate([predict(raw[i:i + 64]) for i in range(0, len(raw), 64)])
        except ClsfError:
            raise
        except Exception as e:  # noqa: BLE001 - any runtime failure means the export is not usable
            raise ExportMismatch(f"the {fmt} export could not be run by its own runtime ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0]}); nothing was written.") from None
        diff = float(np.abs(got - reference).max())
        if not diff <= TOLERANCE:
            raise ExportMismatch(f"the {fmt} export differs from clsf by {diff:.2g} (> {TOLERANCE}) on {len(raw)} test "
                                 f"images; nothing was written — please report this with the run's model.yaml.")
        info = {"format": fmt, "file": filename, "run": str(run), "checkpoint": which,
                "weights": run.describe_checkpoint(which), "trained_with": trained_with,
                "written_by": f"{writer} ({entry(writer).requires} {_version(entry(writer).requires)})",
                "class_names": names,
                "input": {"shape": ["N", *shape], "dtype": "float32", "layout": "NHWC", "range": "0-255 raw pixels",
                          "normalisation": f"data.scale={cfg.data.scale}, inside the model"},
                "output": "probabilities" if probabilities else "logits",
                "verified": {"runtime": runtime, "images": len(raw), "max_abs_diff": diff, "tolerance": TOLERANCE,
                             "same_prediction": float((got.argmax(1) == reference.argmax(1)).mean())}}
        write_json(tmp / "clsf.json", info)
        _swap_in(tmp, out, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from clsf.integrations.tracking import log_export

    log_export(run, out)  # a run tracked in MLflow: the verified export joins its artifacts
    info["path"] = str(out / filename)
    return info
