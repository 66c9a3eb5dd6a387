"""The training loop every engine shares: data -> spec -> engine -> epochs -> run directory.

Each epoch: engine.train_epoch (the framework's own step function), then validation logits in
batches, metrics computed once here in numpy, one metrics.csv row, TensorBoard scalars, the
checkpoints, the mistake detectors. After the last epoch: the test split, final.json and plots.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from clsf.config import Config, from_dict
from clsf.data import Prepared, load_dataset, prepare
from clsf.data.transforms import Preprocess, channel_stats
from clsf.engines.base import get_engine, metrics_from_logits, softmax
from clsf.errors import UserError
from clsf.frameworks import import_tf, require
from clsf.models.spec import ModelSpec
from clsf.models.zoo import get_spec
from clsf.run import rundir
from clsf.run.checks import Checks
from clsf.run.progress import Progress
from clsf.run.tensorboard import ScalarWriter


def load_data(cfg: Config) -> Prepared:
    d = cfg.data
    ds = load_dataset(d.name, d.data_dir, d.channels, d.image_size, d.skip_bad)
    prep = prepare(ds, d.val_split, cfg.seed, d.train_subset, d.test_subset)
    if d.scale == "standardize" and (d.mean is None or d.std is None):
        d.mean, d.std = channel_stats(prep.train.x)  # from the training split only; stored in config.yaml
    return prep


def preprocess(cfg: Config) -> Preprocess:
    d = cfg.data
    return Preprocess(d.scale, d.mean, d.std, d.crop_padding, d.hflip)


def build_spec(cfg: Config, image_shape, num_classes: int) -> ModelSpec:
    kind = get_spec(cfg.model.name).kind
    if kind != "classifier":
        raise UserError(f"model '{cfg.model.name}' is a GAN {kind}, not a classifier; choose a classifier (see `clsf models list`).")
    return get_spec(cfg.model.name, num_classes, image_shape, cfg.model.init, **cfg.model.args)


def make_engine(cfg: Config, spec: ModelSpec, steps_per_epoch: int):
    if cfg.engine == "torch":
        require("torch")
    else:
        import_tf()
    return get_engine(cfg.engine)(cfg, spec, preprocess(cfg), steps_per_epoch)


def _line(row: dict, epochs: int) -> str:
    val = f"  val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f}" if row.get("val_loss") is not None else ""
    return (f"epoch {row['epoch']}/{epochs}  train_loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f}"
            f"{val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s {row['images_per_s']:.0f} img/s")


def train(cfg: Config | None = None, resume: str | Path | None = None, epochs: int | None = None,
          quiet: bool = False, stop_after: int | None = None) -> Path:
    """Train (or resume) a run; return its directory. `stop_after` ends this call after that many
    epochs in total, as an interruption would, leaving a run that `--resume` completes."""
    if resume is not None:
        run, cfg = _open_run(resume, "last")
        if epochs is not None:
            cfg.epochs = epochs
    prep = load_data(cfg)
    ds = prep.dataset
    spec = build_spec(cfg, ds.image_shape, ds.num_classes)
    steps_per_epoch = math.ceil(len(prep.train) / cfg.batch_size)
    engine = make_engine(cfg, spec, steps_per_epoch)
    checks = Checks(spec, ds.num_classes, quiet)

    if resume is None:
        run = rundir.new_run_dir(cfg.runs_dir, cfg.model.name, cfg.engine, cfg.data.name, cfg.run_name)
        rows, start, best = [], 0, {"val_loss": math.inf, "epoch": None, "bad_epochs": 0}
    else:
        meta = rundir.checkpoint_meta(run, "last")
        engine.load(run / "checkpoints" / "last", training_state=True)
        rows, start, best = rundir.read_metrics(run)[: meta["epoch"]], meta["epoch"], meta["best"]
        if not quiet:
            print(f"resuming {run} after epoch {start}")
    cfg.save(run / "config.yaml")  # resolved: dataset statistics and every default written out
    env = rundir.environment(cfg.engine, str(getattr(engine, "device", "tf")))
    env["data"] = {"source": ds.source, "checksum": ds.checksum, "class_names": ds.class_names,
                   "image_shape": list(ds.image_shape), "train": len(prep.train),
                   "val": len(prep.val) if prep.val else 0, "test": len(prep.test) if prep.test else 0}
    rundir.write_json(run / "env.json", env)
    if not quiet:
        print(f"run {run}: {cfg.model.name} on {ds.name} ({len(prep.train)} train / "
              f"{len(prep.val) if prep.val else 0} val images), engine {cfg.engine}, {cfg.epochs} epochs")
    checks.before_training()
    tb = ScalarWriter(run / "tb")
    last_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    stopped_early = False
    try:
        for epoch in range(start, last_epoch):
            bar = Progress(not quiet, epoch, cfg.epochs)
            t0 = time.perf_counter()
            stats = engine.train_epoch(prep.train.x, prep.train.y, epoch, bar)
            seconds = time.perf_counter() - t0
            bar.close()
            val_loss = val_acc = None
            if prep.val is not None:
                val_loss, val_acc = metrics_from_logits(engine.predict_logits(prep.val.x), prep.val.y)
            row = {"epoch": epoch + 1, "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val_loss,
                   "val_acc": val_acc, "lr": stats.lr, "seconds": seconds, "images_per_s": stats.images / seconds}
            rows.append(row)
            rundir.write_metrics(run, rows)
            tb.scalars(epoch + 1, {k: v for k, v in row.items() if k not in ("epoch", "seconds") and v is not None})
            if not quiet:
                print(_line(row, cfg.epochs))

            monitored = val_loss if val_loss is not None else stats.loss
            improved = monitored < best["val_loss"]
            best = {"val_loss": monitored, "epoch": epoch + 1, "bad_epochs": 0} if improved else \
                {**best, "bad_epochs": best["bad_epochs"] + 1}
            meta = {"epoch": epoch + 1, "global_step": engine.global_step(), "best": best, "metrics": row}
            rundir.save_checkpoint(engine, run, "last", meta)
            if improved:
                rundir.copy_checkpoint(run, "last", "best")
            checks.after_epoch(rows, engine)
            if cfg.early_stop_patience and best["bad_epochs"] >= cfg.early_stop_patience:
                stopped_early = True
                if not quiet:
                    print(f"early stop: val_loss has not improved for {best['bad_epochs']} epochs (best {best['val_loss']:.4f} at epoch {best['epoch']})")
                break
    except KeyboardInterrupt:
        print(f"\nclsf: interrupted; checkpoints/last holds the last finished epoch — continue with: "
              f"clsf train --resume {run}", file=sys.stderr)
        raise
    finally:
        tb.close()
    if len(rows) < cfg.epochs and not stopped_early:
        return run  # interrupted on purpose: no final report yet

    final = finish(run, cfg, engine, prep, spec, rows, checks)
    if not quiet:
        print(f"test_loss {final['test_loss']:.4f}  test_acc {final['test_acc']:.4f}  "
              f"({final['test_images']} test images)  -> {run}")
    return run


def test_report(engine, prep: Prepared) -> dict:
    """Test metrics from the engine's logits: the one definition `train` and `evaluate` share."""
    x, y = prep.test.x, prep.test.y
    logits = engine.predict_logits(x)
    loss, acc = metrics_from_logits(logits, y)
    k = prep.dataset.num_classes
    pred = logits.argmax(1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {name: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None)
                 for i, name in enumerate(prep.dataset.class_names)}
    return {"test_loss": loss, "test_acc": acc, "test_images": int(len(y)), "per_class_acc": per_class,
            "confusion": cm.tolist(), "class_names": prep.dataset.class_names}


def finish(run: Path, cfg: Config, engine, prep: Prepared, spec: ModelSpec, rows: list[dict], checks: Checks) -> dict:
    from clsf.report.plots import plot_confusion, plot_history

    if prep.test is None:
        raise UserError(f"{prep.dataset.source} has no test split to report on; add a test/ folder (training finished, checkpoints are in {run}).")
    final = {"checkpoint": "last", "epochs": len(rows), **test_report(engine, prep)}
    rundir.write_json(run / "final.json", final)
    title = f"{cfg.model.name} / {cfg.engine} / {prep.dataset.name}"
    plot_history(rows, run / "history.png", title)
    plot_confusion(np.array(final["confusion"]), final["class_names"], run / "confusion.png", title)
    total_s = sum(r["seconds"] for r in rows)
    lines = [f"run        {run}", f"engine     {cfg.engine}", f"model      {cfg.model.name}",
             f"data       {prep.dataset.source} ({len(prep.train)} train / {len(prep.val) if prep.val else 0} val / {len(prep.test)} test)",
             f"recipe     {cfg.optim.name} lr {cfg.optim.lr} ({cfg.optim.schedule}), batch {cfg.batch_size}, {len(rows)} epochs, seed {cfg.seed}",
             f"train time {total_s:.1f}s ({np.mean([r['images_per_s'] for r in rows]):.0f} images/s)",
             f"test       loss {final['test_loss']:.4f}  acc {final['test_acc']:.4f}", "",
             "per-class test accuracy:"]
    lines += [f"  {name:<14} {acc:.3f}" if acc is not None else f"  {name:<14} -" for name, acc in final["per_class_acc"].items()]
    if checks.fired:
        lines += ["", "warnings:"] + [f"  {t}" for _, t in checks.fired]
    (run / "summary.txt").write_text("\n".join(lines) + "\n")
    return final


def _open_run(run: Path, which: str = "last"):
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a clsf run directory (no config.yaml); pass the folder `clsf train` printed.")
    cfg = from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    rundir.checkpoint_meta(run, which)
    return run, cfg


def evaluate(run: str | Path, which: str = "last") -> dict:
    """Re-evaluate a run's checkpoint on its test split; with `last` this reproduces final.json."""
    run, cfg = _open_run(run, which)
    prep = load_data(cfg)
    spec = build_spec(cfg, prep.dataset.image_shape, prep.dataset.num_classes)
    engine = make_engine(cfg, spec, 1)
    engine.load(run / "checkpoints" / which, training_state=False)
    if prep.test is None:
        raise UserError(f"{prep.dataset.source} has no test split to evaluate on.")
    import json

    env = json.loads((run / "env.json").read_text())
    if env.get("data", {}).get("checksum") not in (None, prep.dataset.checksum):
        print(f"clsf: warning: the data at {prep.dataset.source} changed since this run trained (checksum differs).", file=sys.stderr)
    return test_report(engine, prep)


def predict(run: str | Path, images: list[str], top_k: int = 3, which: str = "best") -> list[tuple[str, list[tuple[str, float]]]]:
    import json

    from clsf.data.folder import decode_image, image_to_array

    run, cfg = _open_run(run, which)
    env = json.loads((run / "env.json").read_text())
    names, shape = env["data"]["class_names"], env["data"]["image_shape"]
    arrays = []
    for path in images:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"image '{path}' does not exist; check the path.")
        try:
            img = decode_image(p.read_bytes(), str(p), None)
        except ValueError as e:
            raise UserError(f"cannot decode image '{path}' ({e}); give a PNG, JPEG or BMP file.") from None
        arrays.append(image_to_array(img, shape[2], tuple(shape[:2])))  # to the run's channels and size
    spec = build_spec(cfg, tuple(shape), len(names))
    engine = make_engine(cfg, spec, 1)
    engine.load(run / "checkpoints" / which, training_state=False)
    probs = softmax(engine.predict_logits(np.stack(arrays)))
    out = []
    for path, p in zip(images, probs):
        order = np.argsort(-p)[: max(1, top_k)]
        out.append((path, [(names[i], float(p[i])) for i in order]))
    return out
