"""`clsf train`: set a run up (data, spec, engine, run directory, state), hand it to the loop
(clsf.run.loop.fit) with its callbacks, and finish it (the test split, final.json, pictures)."""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clsf.config import Config, flatten
from clsf.data import Prepared
from clsf.data.stream import Files, as_array
from clsf.data.transforms import Preprocess
from clsf.engines import engine_class
from clsf.engines.checkpoint import Checkpoint
from clsf.errors import UserError
from clsf.models.pretrained import configure as configure_pretrained
from clsf.models.spec import ModelSpec
from clsf.run import callbacks as cb
from clsf.techniques.averaging import averaged
from clsf.run.checks import Checks
from clsf.run.loop import Classify, fit, logits_of
from clsf.run.resume import check_fingerprints, fingerprints, resume_config
from clsf.run.checkpoints import init_folder
from clsf.run.environment import environment
from clsf.run.rundir import RunDir
from clsf.metrics import softmax, split_report
from clsf.run.setup import build_spec, load_data
from clsf.run.state import RunState
from clsf.techniques.whitening import whiten_first_conv
from clsf.techniques.class_weights import imbalance_warning
from clsf.words import count

MISTAKES = 48  # misclassified test images kept in predictions.npz for the report


def train(cfg: Config | None = None, resume: str | Path | None = None, changes: dict | None = None,
          quiet: bool = False, stop_after: int | None = None, stop_after_steps: int | None = None,
          weights_only: bool = False, plugins: Sequence[cb.Plugin] = ()) -> Path:
    """Train (or resume) a run; return its directory.

    `resume` continues a run from checkpoints/last (an epoch's end, or inside an epoch); `changes`
    (nested config keys, e.g. {"epochs": 10}) may only touch what can change mid-run (see
    clsf.run.resume). `stop_after` ends this call after that many epochs in total, and
    `stop_after_steps` after that many optimizer steps in total with a mid-epoch checkpoint, as an
    interruption would, leaving a run that `resume` completes. `weights_only` resumes from the
    checkpoint's weights with a fresh optimizer (when its optimizer state is lost), on record.
    `plugins`: what layers above plug in (clsf.run.callbacks.Plugin: MLflow, a tune trial's
    reporter; clsf.integrations.train passes them all)."""
    run = state = changed = None
    if resume is not None:
        run, cfg, changed, state = resume_config(resume, changes or {})
        if _finished(run, cfg, state, changed):
            return run.path
    else:
        configure_pretrained(cfg)  # the options and preprocessing model.pretrained's weights need, into config.yaml
    _check_plugins(cfg, plugins)  # refused before anything is written
    prep = load_data(cfg)
    if prep.test is None or not len(prep.test):  # the finish reports on it: refused before training, not after
        raise UserError(f"{prep.dataset.source} has no test images to report on; add a test/ folder of the same "
                        "classes (or a test split to the file), or hold some out with data.test_split=0.2.")
    spec = build_spec(cfg, prep.dataset.image_shape, prep.dataset.num_classes, run)
    if run is None and cfg.optim.class_weight is None and (warning := imbalance_warning(prep.train.y, prep.dataset.class_names)):
        print(warning, file=sys.stderr)  # shown even with --quiet, once, as the run starts
    fingerprint = fingerprints(cfg, spec)
    if state is not None:
        check_fingerprints(run, state, fingerprint)  # before anything is written
    cls = engine_class(cfg.engine)
    world = cls.detect_world()  # several replicas (torchrun, TF_CONFIG, GPUs): batch_size is per replica
    steps_per_epoch = math.ceil(len(prep.train) / (cfg.batch_size * world.size))
    _check_inputs(cfg, prep, cls, world.size)
    engine = averaged(cls(cfg, spec, steps_per_epoch), cfg.optim, steps_per_epoch * cfg.epochs)  # optim.ema: a weight average
    lead = world.lead  # the one process that prints and writes the run directory
    quiet = quiet or not lead
    if run is None:
        run, state, pretrained = _start(cfg, engine, prep, lead)
    else:
        state, pretrained = _restore(run, engine, state, world.size, steps_per_epoch, changed, quiet, weights_only), None
    state.epochs, state.replicas, state.fingerprints = cfg.epochs, world.size, fingerprint
    run = run if lead else None  # processes other than the lead write nothing
    checks = Checks(spec, prep.dataset.num_classes, quiet, silent=not lead)
    with _lock(run), _disk_space(run):  # one process trains a run; a full disk: one line, the last checkpoint intact
        if run is not None:
            _write_setup(run, cfg, spec, engine, prep, changed, state, pretrained)
        if not quiet and changed is None and cfg.run_name and run.name != cfg.run_name:
            print(f"clsf: note: {Path(cfg.runs_dir) / cfg.run_name} exists, so this run is {run} (clsf never writes "
                  "into another run).", file=sys.stderr)
        d = cfg.data
        if not quiet and changed is None and d.train_subset and not (d.val_subset or d.test_subset) and \
                max(len(prep.val) if prep.val else 0, len(prep.test)) > len(prep.train):
            print(f"clsf: note: data.train_subset={d.train_subset} shrinks the training split only; each epoch still "
                  f"evaluates all {len(prep.val) if prep.val else 0} validation images and the finish all "
                  f"{len(prep.test)} test images — data.val_subset and data.test_subset shrink those.", file=sys.stderr)
        if not quiet:
            counts = f"{len(prep.train)} train / {len(prep.val) if prep.val else 0} val / {len(prep.test)} test images"
            held = (f"; the test images are {prep.held_out['fraction']:.0%} of the folder's, held out (stratified, the "
                    f"same for every run: data.test_split)" if prep.held_out else "")
            print(f"run {run}: {cfg.model.name} on {prep.dataset.name} ({counts}{held}), engine {cfg.engine} on "
                  f"{engine.device}, {count(cfg.epochs, 'epoch')}")
        made = [(p.decides, p.make(cfg, run, quiet)) for p in plugins]
        callbacks = _callbacks(cfg, run, engine, checks, quiet, stop_after, stop_after_steps,
                               [c for d, c in made if d and c], [c for d, c in made if not d and c])
        state = _fit(engine, prep, state, callbacks, cfg, steps_per_epoch, run)
        if state.stop not in (None, "early", "pruned"):
            return run.path if run is not None else None  # paused on purpose: no final report yet
        with _interrupt_held(run):  # the finish runs whole: a few seconds, and the run is complete after it
            final = finish(run, cfg, engine, prep, state.rows, checks, state.stopped)
            callbacks.on_finish(final)
    engine.close()  # e.g. every process leaves the group together, once the lead has written
    if not quiet:
        print(f"test_loss {final['test_loss']:.4f}  test_acc {final['test_acc']:.4f}  "
              f"({final['test_images']} test images)  -> {run}")
    return run.path if run is not None else None


@contextlib.contextmanager
def _interrupt_held(run: RunDir | None):
    """Ctrl-C (or SIGINT from a dying parent) while the finish writes is held until the finish is
    done, then raised: raised inside it, it could land in an import of a C extension (matplotlib's),
    which turns it into an ImportError and a traceback, with final.json never written."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        cb.restore_sigint(previous)
    if held:
        e = KeyboardInterrupt()
        e.reported = True
        if run is not None:
            print(f"\nclsf: interrupted as the run finished; it is complete: {run}", file=sys.stderr)
        raise e


def _finished(run: RunDir, cfg: Config, state: RunState, changed: dict) -> bool:
    if state.epoch >= cfg.epochs or (state.stopped_early and "epochs" not in changed):
        final = run.final()
        if final is not None:
            print(f"{run} is finished ({count(state.epoch, 'epoch')}, test_acc {final['test_acc']:.4f}); nothing to do — "
                  f"to train further, resume with --epochs above {state.epoch}.")
            return True
    return False


def _check_inputs(cfg: Config, prep: Prepared, cls, replicas: int) -> None:
    paired = [f"data.{key}" for t in Preprocess.of(cfg.data).batch if t.pairs_in_batch for key in t.fields]
    if replicas > 1 and paired:
        raise UserError(f"{' and '.join(paired)} pair each image with another of its batch, which this run splits over "
                        f"{replicas} replicas; train them on one (no --nproc, one GPU), or leave them out.")
    if not isinstance(prep.train.x, Files):  # streamed from disk (clsf.data.stream): what that path does not do
        return
    if cfg.tta_flip or cfg.tta_shift:
        raise UserError("tta_flip and tta_shift are not available for streamed images (data.stream); leave them out, "
                        "or load the images in memory.")
    if replicas > 1 and not cls.streams_across_replicas:
        raise UserError(f"streamed images (data.stream) train on one replica with the {cfg.engine} engine; use an "
                        "engine that streams to several (torch), or load the images in memory.")


def _start(cfg: Config, engine, prep: Prepared, lead: bool) -> tuple[RunDir | None, RunState, dict | None]:
    """A new run: weights from init_from or model.pretrained if given, the run directory,
    checkpoints/init; what model.pretrained loaded, for env.json."""
    pretrained = None
    if cfg.init_from:
        _load_init(engine, cfg)
    elif cfg.model.pretrained:
        pretrained = _load_pretrained(engine, cfg)
    elif cfg.model.whiten_init:  # the same numpy result loaded into every engine
        whiten_first_conv(engine, engine.spec, prep.train.x, engine.pre)
    run = RunDir.create(cfg.runs_dir, cfg.model.name, cfg.engine, cfg.data.name, cfg.run_name) if lead else None
    try:
        save_init(run, engine, prep, cfg.init_from)
    except BaseException:  # a full disk or a kill before the first checkpoint: no folder that nothing can resume
        if run is not None:
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    return run, RunState(), pretrained


def _restore(run: RunDir, engine, state: RunState, replicas: int, steps_per_epoch: int, changed: dict,
             quiet: bool, weights_only: bool) -> RunState:
    """A resumed run: the engine from checkpoints/last; the schedule re-derived if the replica count
    (so the steps per epoch) changed, which only an epoch's end allows."""
    engine.load(run.checkpoint("last"), training_state=not weights_only)
    if weights_only:  # a fresh optimizer; the schedule continues from the global step
        engine.set_global_step(state.global_step)
        changed["weights_only"] = True
    if state.replicas != replicas:
        if state.step:
            raise UserError(f"{run} stopped inside epoch {state.epoch + 1} with {state.replicas} replica(s); resume it with "
                            f"as many (--nproc {state.replicas}) to finish that epoch, or from an epoch's end with any number.")
        engine.set_global_step(state.epoch * steps_per_epoch)
        changed["replicas"] = [state.replicas, replicas]
    if not quiet:
        inside = f", step {state.step} of epoch {state.epoch + 1}" if state.step else ""
        print(f"resuming {run} after epoch {state.epoch}{inside}")
    return state


def _write_setup(run: RunDir, cfg: Config, spec: ModelSpec, engine, prep: Prepared, changed: dict | None,
                 state: RunState, pretrained: dict | None = None) -> None:
    """config.yaml (resolved), model.yaml (the exact network) and env.json; a resume adds itself to
    env.json's resumes and keeps the environment the run started in."""
    run.has_checkpoint("best")  # finishes a copy to best that a kill cut short
    run.write_config(cfg)
    run.write_model(spec)
    env = environment(cfg.engine, engine.device, {"precision": engine.precision, **engine.environment()})
    if changed is not None:
        run.add_resume({"after_epoch": state.epoch, "time": env["started"], "device": env["device"],
                        "precision": env["precision"], "changed": changed})
        return
    ds = prep.dataset
    env["data"] = {"source": ds.source, "checksum": ds.checksum, "class_names": ds.class_names,
                   "image_shape": list(ds.image_shape), "train": len(prep.train),
                   "val": len(prep.val) if prep.val else 0, "test": len(prep.test) if prep.test else 0,
                   **({"test_held_out": prep.held_out} if prep.held_out else {})}
    if pretrained is not None:
        env["pretrained"] = pretrained
    if cfg.optim.class_weight is not None:
        env["data"]["class_weights"] = dict(zip(ds.class_names, cfg.optim.class_weight))
    env["replicas"] = {"count": engine.world.size, "processes": engine.world.processes,
                       "batch_size_per_replica": cfg.batch_size, "effective_batch_size": cfg.batch_size * engine.world.size}
    run.write_env(env)


def _callbacks(cfg: Config, run: RunDir | None, engine, checks: Checks, quiet: bool, stop_after: int | None,
               stop_after_steps: int | None, deciders: list[cb.Callback] = (),
               others: list[cb.Callback] = ()) -> cb.Callbacks:
    """Every process decides alike (stops, early stop, unfreezing, and the plugins' `deciders`, e.g. a
    tune trial's pruner); only the lead writes and prints (the plugins' `others` after its own logs)."""
    decide = [cb.Interrupt(), cb.PauseAfter(engine, stop_after, stop_after_steps),
              cb.EarlyStop(cfg.early_stop_patience, quiet), cb.Unfreeze(engine, cfg.unfreeze_after, checks, quiet)]
    show = [] if quiet else [cb.Progress(cfg.epochs)]
    decide += list(deciders)
    write = [] if run is None else [cb.Checkpoints(run, engine, cfg.save_every_steps, cfg.save_every_minutes),
                                    cb.Logs(run, hparams=flatten(cfg.to_dict()))]
    write += list(others)
    return cb.Callbacks(show + decide + write + [cb.MistakeChecks(checks, engine)])


def _check_plugins(cfg: Config, plugins) -> None:
    """Each plugin's own check, and no config key asking for an integration that nobody plugged in."""
    for p in plugins:
        p.check(cfg)
    if cfg.track and "track" not in {k for p in plugins for k in p.keys}:
        raise UserError(f"track={cfg.track} is done by clsf's integrations, which this call did not plug in; use "
                        "clsf.train (or `clsf train`), which does, or leave track out.")


def _fit(engine, prep: Prepared, state: RunState, callbacks, cfg: Config, steps_per_epoch: int,
         run: RunDir | None) -> RunState:
    """The loop, with Ctrl-C said in one line naming what the checkpoint holds."""
    try:
        state = fit(Classify(engine, prep, cfg, steps_per_epoch), state, callbacks)
        if state.stop == "interrupt":
            raise KeyboardInterrupt
        return state
    except KeyboardInterrupt as e:
        if run is not None:
            print("\n" + run.interrupted("clsf train"), file=sys.stderr)
            e.reported = True  # said once, here
        raise


def _disk_space(run: RunDir | None):
    return run.disk_space() if run is not None else contextlib.nullcontext()


def _lock(run: RunDir | None):
    return run.lock() if run is not None else contextlib.nullcontext()


def _load_init(engine, cfg: Config) -> None:
    """init_from: every layer's weights, or (init_head=false) every layer's but the classifier
    head's, which keeps its fresh initialisation (a new head for new classes)."""
    from clsf.models.transfer import param_layers

    folder = init_folder(cfg.init_from)
    names = param_layers(engine.spec)
    only = set(names if cfg.init_head else names[:-1])
    try:
        engine.load(folder, training_state=False, only=only)
    except (KeyError, ValueError, RuntimeError) as e:
        what = "" if cfg.init_head else f" (all but the head '{names[-1]}')"
        raise UserError(f"the weights in {folder} do not fit model '{cfg.model.name}'{what} ({str(e)[:160]}); "
                        "give a checkpoint of the same model.") from None


def _load_pretrained(engine, cfg: Config) -> dict:
    """model.pretrained: the file's weights in the neutral layout, loaded like a checkpoint's (from a
    temporary folder); the head too where the file's class count is the data's, else a new head drawn
    in numpy from the run's seed — so every engine starts from the same weights."""
    import tempfile

    from clsf.models.pretrained import load_pretrained
    from clsf.models.transfer import save_npz

    imported = load_pretrained(engine.spec, cfg.model.pretrained, cfg.seed)
    with tempfile.TemporaryDirectory(prefix="clsf-pretrained-") as tmp:
        save_npz(Checkpoint(tmp).weights, imported.weights)
        engine.load(Checkpoint(tmp), training_state=False, only=set(imported.weights))
    return imported.info


def save_init(run: RunDir | None, engine, prep: Prepared, init_from: str | None) -> None:
    """checkpoints/init: the weights before the first step, and their logits on up to 256 probe
    images (the first validation images, else training images), so engines started from the same
    weights can show they compute the same function before any training."""
    probe = (prep.val if prep.val is not None else prep.train).x[:256]
    logits = engine.predict_logits(probe)  # every process takes part; the lead (run given) writes
    if run is not None:
        with run.disk_space():
            run.save_checkpoint(engine, "init", {"epoch": 0, "global_step": 0, "init_from": init_from})
            run.save_init_logits(logits)


def finish(run: RunDir | None, cfg: Config, engine, prep: Prepared, rows: list[dict], checks: Checks,
           stopped: str | None = None) -> dict:
    """The test split through the run's model (checkpoints/last, what the run ended with): test
    logits and the most confident mistakes in predictions.npz, pictures, summary.txt, and final.json
    written last."""
    from clsf.plots import plot_confusion, plot_history
    from clsf.run.tensorboard import ScalarWriter

    logits = logits_of(engine, prep.test.x, cfg)  # (N, K) float32; every process takes part
    report = split_report(logits, prep.test.y, prep.dataset.class_names)
    if run is None:  # not the lead process: nothing to write
        return report
    # the test logits stay with the run, and the most confident mistakes with their images, so
    # reports and cross-framework checks need neither a framework nor the dataset
    mistakes = np.flatnonzero(logits.argmax(1) != prep.test.y)
    mistakes = mistakes[np.argsort(-softmax(logits[mistakes]).max(1), kind="stable")][:MISTAKES]
    run.save_predictions(logits=logits.astype(np.float32), labels=prep.test.y, mistake_index=mistakes,
                         mistake_images=as_array(prep.test.x[mistakes]))
    final = {"checkpoint": "last", "epochs": len(rows), "stopped": stopped, **report}
    title = f"{cfg.model.name} / {cfg.engine} / {prep.dataset.name}"
    plot_history(rows, run.history_png, title)
    plot_confusion(np.array(final["confusion"]), final["class_names"], run.confusion_png, title)
    tb = ScalarWriter(run.tb_dir)  # the pictures in TensorBoard too, at the last epoch
    try:
        tb.images(len(rows), {"confusion_matrix": run.confusion_png.read_bytes(), "history": run.history_png.read_bytes()})
    finally:
        tb.close()
    tracing = engine.diagnostics(detail=True)  # the tf.function lesson, measured: traces and graph size per function
    if tracing:
        run.update_env(tracing=tracing)
    run.write_summary(_summary(run, cfg, engine, prep, rows, final, tracing, checks))
    # last: a run with final.json is finished whole; one killed before it resumes into this finish
    # (its checkpoint says training is done) and trains nothing
    run.write_final(final)
    return final


def _summary(run: RunDir, cfg: Config, engine, prep: Prepared, rows: list[dict], final: dict, tracing: dict,
             checks: Checks) -> str:
    total_s = sum(r["seconds"] for r in rows)
    lines = [f"run        {run}", f"engine     {cfg.engine} ({engine.device})", f"model      {cfg.model.name}",
             f"data       {prep.dataset.source} ({len(prep.train)} train / {len(prep.val) if prep.val else 0} val / {len(prep.test)} test)",
             f"recipe     {cfg.optim.name} lr {cfg.optim.lr} ({cfg.optim.schedule}), batch {cfg.batch_size}, {count(len(rows), 'epoch')}, seed {cfg.seed}",
             f"train time {total_s:.1f}s ({np.mean([r['images_per_s'] for r in rows]):.0f} images/s)",
             f"test       loss {final['test_loss']:.4f}  acc {final['test_acc']:.4f}  balanced acc "
             f"{final['balanced_acc']:.4f}  macro-F1 {final['macro_f1']:.4f}", "",
             f"  {'class':<14} {'recall':>6} {'precision':>9} {'F1':>6} {'images':>7}"]
    dash = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines += [f"  {name:<14} {dash(m['recall']):>6} {dash(m['precision']):>9} {dash(m['f1']):>6} {m['images']:>7}"
              for name, m in final["per_class"].items()]
    if tracing:
        lines += ["", "traced functions:"] + [
            f"  {fn:<13} traced {t['traces']} time(s)" + (f", {t['graph_nodes']:,} graph nodes" if t["graph_nodes"] else "")
            for fn, t in tracing.items()]
    if checks.fired:
        lines += ["", "warnings:"] + [f"  {t}" for _, t in checks.fired]
    return "\n".join(lines) + "\n"
