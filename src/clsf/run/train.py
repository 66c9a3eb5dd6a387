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

from clsf.config import Config
from clsf.data import Prepared, load_dataset, prepare
from clsf.data.stream import Files, as_array, sample_for_stats
from clsf.data.transforms import channel_stats
from clsf.engines import create_engine, engine_class
from clsf.engines.base import Meter, metrics_from_logits, softmax
from clsf.engines.schedule import lr_at
from clsf.errors import UserError
from clsf.models.spec import ModelSpec, output_shape
from clsf.models.yaml_spec import is_spec_file, load_spec_file, spec_to_yaml
from clsf.models.zoo import get_spec
from clsf.run import rundir
from clsf.run.checks import Checks
from clsf.run.midepoch import MidEpoch, StopAfterSteps
from clsf.run.progress import Progress
from clsf.run.resume import resume_config
from clsf.run.tensorboard import ScalarWriter


MISTAKES = 48  # misclassified test images kept in predictions.npz for the report


def load_data(cfg: Config) -> Prepared:
    d = cfg.data
    ds = load_dataset(d.name, d.data_dir, d.channels, d.image_size, d.skip_bad, d.stream)
    prep = prepare(ds, d.val_split, cfg.seed, d.train_subset, d.test_subset)
    if d.scale == "standardize" and (d.mean is None or d.std is None):  # from the training split only; stored in config.yaml
        x = prep.train.x
        d.mean, d.std = channel_stats(sample_for_stats(x, cfg.seed) if isinstance(x, Files) else x)  # streamed: 10k of them
    return prep


def build_spec(cfg: Config, image_shape, num_classes: int, run: Path | None = None) -> ModelSpec:
    """The model to train, or (given `run`) the one a run trained: its saved model.yaml, so a run
    reloads without the file or registry entry it was built from."""
    if run is not None and (run / "model.yaml").is_file():
        return load_spec_file(run / "model.yaml")
    # a registry GAN part is named as such before its input shape is forced onto it
    kind = "classifier" if is_spec_file(cfg.model.name) else get_spec(cfg.model.name).kind
    spec = get_spec(cfg.model.name, num_classes, image_shape, cfg.model.init, **cfg.model.args) if kind == "classifier" else None
    if spec is None or spec.kind != "classifier":
        raise UserError(f"model '{cfg.model.name}' is a GAN {kind if spec is None else spec.kind}, not a classifier; "
                        f"choose a classifier (see `clsf models list`).")
    out = output_shape(spec)
    if out != (num_classes,):
        raise UserError(f"model '{cfg.model.name}' outputs {out} but the data has {num_classes} classes; "
                        f"give its last layer units: num_classes.")
    return spec


def logits_of(engine, x: np.ndarray, cfg: Config) -> np.ndarray:
    """An engine's logits (N, K) for uint8 images (N, H, W, C); with tta_flip, averaged with the
    logits of the left-right mirror images (test-time augmentation: a point or two for free)."""
    logits = engine.predict_logits(x)
    if cfg.tta_flip:
        logits = (logits + engine.predict_logits(np.ascontiguousarray(x[:, :, ::-1]))) / 2
    return logits


def _line(row: dict, epochs: int) -> str:
    val = f"  val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f}" if row.get("val_loss") is not None else ""
    return (f"epoch {row['epoch']}/{epochs}  train_loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f}"
            f"{val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s {row['images_per_s']:.0f} img/s")


def _tb_values(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("epoch", "seconds", "peak_mem_mb") and v is not None}


def train(cfg: Config | None = None, resume: str | Path | None = None, changes: dict | None = None,
          quiet: bool = False, stop_after: int | None = None, stop_after_steps: int | None = None) -> Path:
    """Train (or resume) a run; return its directory.

    `resume` continues a run from checkpoints/last (an epoch's end, or inside an epoch); `changes`
    (nested config keys, e.g. {"epochs": 10}) may only touch what can change mid-run (see
    clsf.run.resume). `stop_after` ends this call after that many epochs in total, and
    `stop_after_steps` after that many optimizer steps in total with a mid-epoch checkpoint, as an
    interruption would, leaving a run that `resume` completes."""
    if resume is not None:
        run, cfg, changed, meta = resume_config(resume, changes or {})
        if meta["epoch"] >= cfg.epochs or (meta.get("stopped_early") and "epochs" not in changed):
            if (run / "final.json").exists():
                final = rundir.read_json(run / "final.json")
                print(f"{run} is finished ({meta['epoch']} epochs, test_acc {final['test_acc']:.4f}); nothing to do — "
                      f"to train further, resume with --epochs above {meta['epoch']}.")
                return run
    prep = load_data(cfg)
    ds = prep.dataset
    spec = build_spec(cfg, ds.image_shape, ds.num_classes, run if resume is not None else None)
    cls = engine_class(cfg.engine)
    world = cls.detect_world()  # several replicas (torchrun, TF_CONFIG, GPUs): batch_size is per replica
    steps_per_epoch = math.ceil(len(prep.train) / (cfg.batch_size * world.size))
    engine = cls(cfg, spec, steps_per_epoch)
    if isinstance(prep.train.x, Files):  # streamed from disk (clsf.data.stream): what that path does not do
        if cfg.tta_flip:
            raise UserError("tta_flip is not available for streamed images (data.stream); leave it out, or load them in memory.")
        if world.size > 1 and not cls.streams_across_replicas:
            raise UserError(f"streamed images (data.stream) train on one replica with the {cfg.engine} engine; use an "
                            "engine that streams to several (torch), or load the images in memory.")
    lead = world.lead  # the one process that prints and writes the run directory
    quiet = quiet or not lead
    checks = Checks(spec, ds.num_classes, quiet, silent=not lead)

    env = rundir.environment(cfg.engine, engine.device, engine.environment())
    env["data"] = {"source": ds.source, "checksum": ds.checksum, "class_names": ds.class_names,
                   "image_shape": list(ds.image_shape), "train": len(prep.train),
                   "val": len(prep.val) if prep.val else 0, "test": len(prep.test) if prep.test else 0}
    env["replicas"] = {"count": world.size, "processes": world.processes, "batch_size_per_replica": cfg.batch_size,
                       "effective_batch_size": cfg.batch_size * world.size}
    if resume is None:
        if cfg.init_from:
            _load_init(engine, cfg)
        run = rundir.new_run_dir(cfg.runs_dir, cfg.model.name, cfg.engine, cfg.data.name, cfg.run_name) if lead else None
        rows, start, best = [], 0, {"val_loss": math.inf, "epoch": None, "bad_epochs": 0}
        save_init(run, engine, prep, cfg.init_from)
    else:
        engine.load(run / "checkpoints" / "last", training_state=True)
        if lead:
            rundir.recover_checkpoint(run, "best")  # a copy to best that a kill cut short
        start, best = meta["epoch"], meta["best"]
        replicas = meta.get("replicas", 1)
        if replicas != world.size:  # the steps per epoch changed: the schedule continues from the epoch
            if meta.get("step"):
                raise UserError(f"{run} stopped inside epoch {start + 1} with {replicas} replica(s); resume it with "
                                f"as many (--nproc {replicas}) to finish that epoch, or from an epoch's end with any number.")
            engine.set_global_step(start * steps_per_epoch)
            changed["replicas"] = [replicas, world.size]
        # the checkpoint holds every epoch's row: log lines a kill cut off (one or several) come back
        rows = meta["rows"] if "rows" in meta else rundir.read_metrics(run)[:start]
        if len(rows) == start - 1 and meta.get("metrics"):  # a checkpoint from before rows were kept
            rows.append(meta["metrics"])
        first = rundir.read_json(run / "env.json")  # the environment the run started in stays on record
        env = {**first, "resumes": first.get("resumes", []) + [
            {"after_epoch": start, "time": env["started"], "device": env["device"], "changed": changed}]}
        if not quiet:
            inside = f", step {meta['step']} of epoch {start + 1}" if meta.get("step") else ""
            print(f"resuming {run} after epoch {start}{inside}")
        run = run if lead else None
    with rundir.disk_space(run):  # a full disk: one line, the last checkpoint intact
        if lead:
            rundir.write_text(run / "config.yaml", cfg.to_yaml())  # resolved: dataset statistics and every default written out
            rundir.write_text(run / "model.yaml", spec_to_yaml(spec, follow_data=False))  # the exact network, reloadable alone
            rundir.write_json(run / "env.json", env)
        if not quiet:
            print(f"run {run}: {cfg.model.name} on {ds.name} ({len(prep.train)} train / "
                  f"{len(prep.val) if prep.val else 0} val images), engine {cfg.engine} on {engine.device}, {cfg.epochs} epochs")
        checks.before_training()
        # a resumed run: TensorBoard drops what came before (a purge from step 1) and gets every
        # epoch again from the checkpoint, as metrics.csv does, so every epoch shows exactly once
        tb = ScalarWriter(run / "tb", purge_step=1 if start else None) if lead else None
        if start and lead:
            rundir.write_metrics(run, rows)
            for row in rows:
                tb.scalars(row["epoch"], _tb_values(row))
        last_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        stopped_early = resume is not None and meta.get("stopped_early", False) and "epochs" not in changed
        mid = MidEpoch(run, engine, cfg, stop_after_steps, world.size)  # replicas, recorded in its checkpoints
        unfrozen = False
        try:
            with mid:  # Ctrl-C: a checkpoint at the next step boundary (or the epoch's end), then stop
                for epoch in range(start, last_epoch):
                    bar = Progress(not quiet, epoch, cfg.epochs)
                    first_step = meta.get("step", 0) if resume is not None and epoch == start else 0  # inside the epoch
                    meter = Meter(epoch, engine.global_step() - first_step, len(prep.train), cfg.batch_size * world.size,
                                  bar, mid.after_step)  # counts global batches
                    carried = 0.0
                    if first_step:
                        meter.restore(meta["meter"])  # the epoch's running sums up to the checkpoint
                        carried = meta["meter"]["seconds"]
                    if cfg.unfreeze_after is not None and epoch >= cfg.unfreeze_after and not unfrozen:
                        engine.unfreeze()  # the head has trained alone for unfreeze_after epochs
                        checks.expect_retrace()
                        unfrozen = True
                        if not quiet:
                            print(f"epoch {epoch + 1}: the trunk is unfrozen; every layer trains from here")
                    t0 = time.perf_counter()
                    mid.begin_epoch(epoch, meter, rows, best, t0, carried)
                    engine.train_epoch(prep.train.x, prep.train.y, epoch, meter, first_step)
                    seconds = carried + time.perf_counter() - t0
                    bar.close()
                    val_loss = val_acc = None
                    if prep.val is not None:
                        val_loss, val_acc = metrics_from_logits(logits_of(engine, prep.val.x, cfg), prep.val.y)
                    lr = lr_at(engine.global_step() - 1, steps_per_epoch, cfg.epochs, cfg.optim)  # the epoch's last step
                    row = {"epoch": epoch + 1, "train_loss": meter.loss, "train_acc": meter.acc, "val_loss": val_loss,
                           "val_acc": val_acc, "lr": lr, "seconds": seconds, "images_per_s": meter.seen / seconds,
                           "peak_mem_mb": rundir.peak_memory_mb()}
                    rows.append(row)
                    if not quiet:
                        print(_line(row, cfg.epochs))

                    monitored = val_loss if val_loss is not None else meter.loss
                    improved = monitored < best["val_loss"]
                    best = {"val_loss": monitored, "epoch": epoch + 1, "bad_epochs": 0} if improved else \
                        {**best, "bad_epochs": best["bad_epochs"] + 1}
                    stopped_early = bool(cfg.early_stop_patience and best["bad_epochs"] >= cfg.early_stop_patience)
                    # checkpoint first, then the logs: a kill in between loses log lines the resume rewrites,
                    # never a checkpoint the logs already claim
                    meta = {"epoch": epoch + 1, "global_step": engine.global_step(), "best": best,
                            "stopped_early": stopped_early, "metrics": row, "rows": rows, "replicas": world.size}
                    if lead:
                        rundir.save_checkpoint(engine, run, "last", meta)
                        if improved:
                            rundir.copy_checkpoint(run, "last", "best")
                        rundir.write_metrics(run, rows)
                        tb.scalars(epoch + 1, _tb_values(row))
                    checks.after_epoch(rows, engine)
                    if mid.interrupted:  # Ctrl-C came between steps (validation, logs): this epoch is saved
                        raise KeyboardInterrupt
                    if stopped_early:
                        if not quiet:
                            print(f"early stop: val_loss has not improved for {best['bad_epochs']} epochs (best {best['val_loss']:.4f} at epoch {best['epoch']})")
                        break
        except StopAfterSteps:
            return run  # stopped on purpose inside an epoch, checkpoint written: no final report yet
        except KeyboardInterrupt:
            if not lead:
                raise
            at = rundir.checkpoint_meta(run) if (run / "checkpoints" / "last").is_dir() else None
            where = "no epoch yet" if at is None else f"epoch {at['epoch']}" + (
                f", step {at['step']} of epoch {at['epoch'] + 1}" if at.get("step") else "")
            print(f"\nclsf: interrupted; checkpoints/last holds the run up to {where} — continue with: "
                  f"clsf train --resume {run}", file=sys.stderr)
            raise
        finally:
            if tb is not None:
                tb.close()
        if len(rows) < cfg.epochs and not stopped_early:
            return run  # interrupted on purpose: no final report yet

        final = finish(run, cfg, engine, prep, spec, rows, checks)
    engine.close()  # e.g. every process leaves the group together, once the lead has written
    if not quiet:
        print(f"test_loss {final['test_loss']:.4f}  test_acc {final['test_acc']:.4f}  "
              f"({final['test_images']} test images)  -> {run}")
    return run


def _load_init(engine, cfg: Config) -> None:
    """init_from: every layer's weights, or (init_head=false) every layer's but the classifier
    head's, which keeps its fresh initialisation (a new head for new classes)."""
    from clsf.models.transfer import param_layers

    folder = rundir.init_folder(cfg.init_from)
    names = param_layers(engine.spec)
    only = set(names if cfg.init_head else names[:-1])
    try:
        engine.load(folder, training_state=False, only=only)
    except (KeyError, ValueError, RuntimeError) as e:
        what = "" if cfg.init_head else f" (all but the head '{names[-1]}')"
        raise UserError(f"the weights in {folder} do not fit model '{cfg.model.name}'{what} ({str(e)[:160]}); "
                        "give a checkpoint of the same model.") from None


def save_init(run: Path | None, engine, prep: Prepared, init_from: str | None) -> None:
    """checkpoints/init: the weights before the first step, and their logits on up to 256 probe
    images (the first validation images, else training images), so engines started from the same
    weights can show they compute the same function before any training."""
    probe = (prep.val if prep.val is not None else prep.train).x[:256]
    logits = engine.predict_logits(probe)  # every process takes part; the lead (run given) writes
    if run is not None:
        with rundir.disk_space(run):
            rundir.save_checkpoint(engine, run, "init", {"epoch": 0, "global_step": 0, "init_from": init_from})
            rundir.save_arrays(run / "checkpoints" / "init" / "logits.npz", logits=logits.astype(np.float32))


def test_report(logits: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    """Metrics of a split from an engine's logits: the one definition `train` and `evaluate` share."""
    loss, acc = metrics_from_logits(logits, y)
    k = len(class_names)
    pred = logits.argmax(1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {name: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, name in enumerate(class_names)}
    return {"test_loss": loss, "test_acc": acc, "test_images": int(len(y)), "per_class_acc": per_class,
            "confusion": cm.tolist(), "class_names": class_names}


def finish(run: Path | None, cfg: Config, engine, prep: Prepared, spec: ModelSpec, rows: list[dict], checks: Checks) -> dict:
    from clsf.report.plots import plot_confusion, plot_history

    if prep.test is None:
        raise UserError(f"{prep.dataset.source} has no test split to report on; add a test/ folder (training finished, checkpoints are in {run}).")
    logits = logits_of(engine, prep.test.x, cfg)  # (N, K) float32; every process takes part
    if run is None:  # not the lead process: nothing to write
        return test_report(logits, prep.test.y, prep.dataset.class_names)
    # the test logits stay with the run, and the most confident mistakes with their images, so
    # reports and cross-framework checks need neither a framework nor the dataset
    mistakes = np.flatnonzero(logits.argmax(1) != prep.test.y)
    mistakes = mistakes[np.argsort(-softmax(logits[mistakes]).max(1), kind="stable")][:MISTAKES]
    rundir.save_arrays(run / "predictions.npz", logits=logits.astype(np.float32), labels=prep.test.y,
                       mistake_index=mistakes, mistake_images=as_array(prep.test.x[mistakes]))
    final = {"checkpoint": "last", "epochs": len(rows), **test_report(logits, prep.test.y, prep.dataset.class_names)}
    rundir.write_json(run / "final.json", final)
    title = f"{cfg.model.name} / {cfg.engine} / {prep.dataset.name}"
    plot_history(rows, run / "history.png", title)
    plot_confusion(np.array(final["confusion"]), final["class_names"], run / "confusion.png", title)
    total_s = sum(r["seconds"] for r in rows)
    lines = [f"run        {run}", f"engine     {cfg.engine} ({engine.device})", f"model      {cfg.model.name}",
             f"data       {prep.dataset.source} ({len(prep.train)} train / {len(prep.val) if prep.val else 0} val / {len(prep.test)} test)",
             f"recipe     {cfg.optim.name} lr {cfg.optim.lr} ({cfg.optim.schedule}), batch {cfg.batch_size}, {len(rows)} epochs, seed {cfg.seed}",
             f"train time {total_s:.1f}s ({np.mean([r['images_per_s'] for r in rows]):.0f} images/s)",
             f"test       loss {final['test_loss']:.4f}  acc {final['test_acc']:.4f}", "",
             "per-class test accuracy:"]
    lines += [f"  {name:<14} {acc:.3f}" if acc is not None else f"  {name:<14} -" for name, acc in final["per_class_acc"].items()]
    tracing = engine.diagnostics(detail=True)  # the tf.function lesson, measured: traces and graph size per function
    if tracing:
        lines += ["", "traced functions:"] + [
            f"  {fn:<13} traced {t['traces']} time(s)" + (f", {t['graph_nodes']:,} graph nodes" if t["graph_nodes"] else "")
            for fn, t in tracing.items()]
        rundir.write_json(run / "env.json", {**rundir.read_json(run / "env.json"), "tracing": tracing})
    if checks.fired:
        lines += ["", "warnings:"] + [f"  {t}" for _, t in checks.fired]
    rundir.write_text(run / "summary.txt", "\n".join(lines) + "\n")
    return final


def checkpoint_engine(run: Path, cfg: Config, which: str, image_shape, num_classes: int):
    """cfg's engine holding the neutral weights of checkpoints/<which>, for inference only."""
    engine = create_engine(cfg, build_spec(cfg, image_shape, num_classes, run), 1)
    engine.load(run / "checkpoints" / which, training_state=False)
    return engine


def evaluate(run: str | Path, which: str = "last", engine: str | None = None, split: str = "test",
             data: str | None = None) -> dict:
    """Evaluate a run's checkpoint on a split. With the defaults this reproduces final.json exactly.

    `engine` loads the run's framework-neutral weights into another engine (a keras run evaluated
    by torch, and the reverse); `data` evaluates on another dataset with the same classes. When the
    split is the run's own test split, the report also compares with the logits the run saved."""
    run, cfg = rundir.open_run(run, which)
    trained_with = cfg.engine
    if engine:
        cfg.engine = engine
    if data:
        cfg.data.name = data
    if split not in ("test", "val"):
        raise UserError(f"split '{split}' is not known; use test or val.")
    env = rundir.read_json(run / "env.json")
    prep = load_data(cfg)
    names = env.get("data", {}).get("class_names")
    if names is not None and prep.dataset.class_names != names:
        raise UserError(f"{prep.dataset.source} has classes {', '.join(prep.dataset.class_names)} but the run was trained "
                        f"on {', '.join(names)}; evaluate on data with the same classes.")
    part = prep.test if split == "test" else prep.val
    if part is None:
        raise UserError(f"{prep.dataset.source} has no {split} split to evaluate on; use --split "
                        f"{'val' if split == 'test' else 'test'}.")
    if not data and env.get("data", {}).get("checksum") not in (None, prep.dataset.checksum):
        print(f"clsf: warning: the data at {prep.dataset.source} changed since this run trained (checksum differs).", file=sys.stderr)
    logits = logits_of(checkpoint_engine(run, cfg, which, prep.dataset.image_shape, prep.dataset.num_classes), part.x, cfg)
    report = {**test_report(logits, part.y, prep.dataset.class_names), "split": split, "engine": cfg.engine,
              "trained_with": trained_with, "checkpoint": which}
    saved = run / "predictions.npz"
    if split == "test" and not data and which == "last" and saved.exists():
        with np.load(saved) as z:
            if len(z["logits"]) == len(logits):
                report["agreement"] = {"same_prediction": float((z["logits"].argmax(1) == logits.argmax(1)).mean()),
                                       "max_abs_logit_diff": float(np.abs(z["logits"] - logits).max())}
    return report
