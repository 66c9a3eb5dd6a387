"""`clsf gan`: the classic MNIST GAN trained for whole epochs into a run directory like a classifier's:

  config.yaml, env.json, metrics.csv (d_loss, g_loss, d_acc_real, d_acc_fake, and the sample
  quality when a judge is given), tb/, checkpoints/last (generator.npz and discriminator.npz in the
  neutral layout + framework state + meta.json), samples/step-NNNNN.png from one fixed latent batch
  every gan.sample_every steps and at the end, samples/progress.png (a row per grid),
  samples/quality.csv (the judge's scores at every grid), final.json.

Quality is measured, not eyeballed, with a clsf classifier run on the same kind of images
(gan.judge): the share of samples it classifies with confidence > 0.9, the entropy of its
predicted-class histogram (mode coverage; ln K when every class is drawn equally), and the Fréchet
distance between its penultimate features of 1,000 samples (one fixed latent set) and of 1,000 real
test images.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from clsf.config import Config, flatten, validate
from clsf.data import load_dataset
from clsf.data.order import epoch_plan
from clsf.data.split import subset
from clsf.data.transforms import Preprocess
from clsf.engines.base import Meter
from clsf.engines.checkpoint import Checkpoint
from clsf.errors import UserError
from clsf.run import callbacks as cb
from clsf.run.progress import Bar
from clsf.run.environment import environment
from clsf.run.files import write_text
from clsf.run.loop import Task, fit
from clsf.run.rundir import RunDir
from clsf.run.state import RunState
from clsf.words import count

KIND = "gan"  # its run kind (clsf.run.rundir.RunKind): env.json's "kind", and the command, `clsf gan`
QUALITY_IMAGES = 1000
COLUMNS = ["epoch", "d_loss", "g_loss", "d_acc_real", "d_acc_fake", "confident", "class_entropy", "frechet",
           "seconds", "images_per_s"]


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), numpy only:
    |mu_a - mu_b|^2 + tr(Ca + Cb - 2 (Ca^1/2 Cb Ca^1/2)^1/2)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(ca)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ cb @ root), 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * cross)


class Judge:
    """A classifier run's model, loaded into the GAN's engine, scoring generated images."""

    def __init__(self, run: str, engine: str, real: np.ndarray):
        from clsf.run.setup import checkpoint_engine

        run = RunDir.open(run, None)
        cfg = run.validate(run.model_checkpoint())
        cfg.engine = engine  # the weights are neutral: the judge runs in the GAN's own engine
        self.engine = checkpoint_engine(run, cfg, run.model_checkpoint())
        self.k = len(run.class_names)
        self.real = self.features(real)

    def features(self, images_u8: np.ndarray) -> np.ndarray:
        """Penultimate-layer features (the input of the last layer) of uint8 images."""
        return self.engine.features(images_u8)

    def score(self, images01: np.ndarray) -> dict:
        from clsf.metrics import softmax

        u8 = np.clip(np.rint(images01 * 255), 0, 255).astype(np.uint8)
        p = softmax(self.engine.predict_logits(u8))
        hist = np.bincount(p.argmax(1), minlength=self.k) / len(p)
        nz = hist[hist > 0]
        return {"confident": float((p.max(1) > 0.9).mean()), "class_entropy": float(-(nz * np.log(nz)).sum()) + 0.0,  # + 0.0: no "-0.0"
                "frechet": frechet(self.features(u8), self.real)}


GRID_SCALE, GRID_GAP = 3, 4  # each 28x28 sample drawn 3x (84 px), 4 white pixels between samples


def _grid(images01: np.ndarray, cols: int = 8) -> np.ndarray:
    """(N, H, W, C) in 0..1 -> one uint8 picture: rows of `cols` samples, each enlarged GRID_SCALE
    times (nearest neighbour, so pixels stay pixels) with GRID_GAP white pixels between them."""
    n, h, w, c = images01.shape
    rows = math.ceil(n / cols)
    big = np.repeat(np.repeat(images01, GRID_SCALE, 1), GRID_SCALE, 2)  # (N, 3H, 3W, C)
    th, tw = h * GRID_SCALE, w * GRID_SCALE
    grid = np.ones((rows * th + (rows - 1) * GRID_GAP, cols * tw + (cols - 1) * GRID_GAP, c))
    for i in range(n):
        r, k = divmod(i, cols)
        grid[r * (th + GRID_GAP): r * (th + GRID_GAP) + th, k * (tw + GRID_GAP): k * (tw + GRID_GAP) + tw] = big[i]
    return np.clip(np.rint(grid * 255), 0, 255).astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    tmp = path.with_name(path.name + ".part")
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(tmp, format="PNG")
    tmp.replace(path)


def gan(cfg: Config | None = None, resume: str | Path | None = None, quiet: bool = False,
        epochs: int | None = None) -> Path:
    """Train (or resume) a GAN run; return its directory. `epochs` with `resume`: train on to that many
    epochs in all (a finished run too), as `clsf train --resume RUN --epochs N` does."""
    from clsf.gans.steps import GANS

    run = state = None
    changed = {}
    if resume is not None:
        run, cfg, state = _resume(resume)
        if epochs is not None and epochs != cfg.epochs:
            if epochs < state.epoch:
                raise UserError(f"--epochs {epochs} is fewer than the {count(state.epoch, 'epoch')} this run has trained; "
                                f"give at least {state.epoch}.")
            changed["epochs"] = [cfg.epochs, epochs]
            cfg.epochs = epochs
            validate(cfg)
        if run.final() is not None and state.epoch >= cfg.epochs:
            print(f"{run} is finished ({count(state.epoch, 'epoch')}); nothing to do — to train further, resume with "
                  f"--epochs above {state.epoch}.")
            return run.path
    x, real, image_shape = _data(cfg)
    model = GANS[cfg.engine](cfg, image_shape)
    judge = Judge(cfg.gan.judge, cfg.engine, real) if cfg.gan.judge else None
    fixed = np.random.default_rng([cfg.seed, 12345]).normal(size=(64, cfg.gan.latent)).astype(np.float32)
    probe = np.random.default_rng([cfg.seed, 54321]).normal(size=(QUALITY_IMAGES, cfg.gan.latent)).astype(np.float32)
    env = environment(cfg.engine, model.device, model.environment())
    if run is None:
        run = RunDir.create(cfg.runs_dir, "gan", cfg.engine, cfg.data.name, cfg.run_name)
        state = RunState(extra={"initial": judge.score(model.generate(probe)) if judge else None, "quality": []})
        arrays = Checkpoint(run.path)  # the names only: what each checkpoint holds, checked before a resume
        run.write_env({**env, "kind": KIND, "checkpoint_files": [arrays.generator.name, arrays.discriminator.name],
                       "data": {"source": str(cfg.data.name), "image_shape": list(image_shape), "train": len(x)}})
    else:
        model.load(run.checkpoint("last"))
        run.add_resume({"after_epoch": state.epoch, "time": env["started"], "device": env["device"], "changed": changed})
    state.epochs = cfg.epochs
    run.write_config(cfg)
    run.samples_dir.mkdir(exist_ok=True)
    logs = cb.Logs(run, COLUMNS, hparams=flatten(cfg.to_dict()))  # its TensorBoard writer also takes the sample grids
    callbacks = cb.Callbacks([cb.Interrupt(), _EpochLine(cfg.epochs, quiet), cb.Checkpoints(run, model, None, None),
                              logs, _QualityLog(run)])
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    if not quiet:
        print(f"{run}: GAN on {len(x)} images ({steps_per_epoch} steps an epoch), engine {cfg.engine} on {model.device}, "
              f"{count(cfg.epochs, 'epoch')}" + (f", from epoch {state.epoch + 1}" if state.epoch else ""), flush=True)
    task = GanEpochs(model, x, cfg, steps_per_epoch, judge, fixed, probe, run, quiet, logs)
    with run.lock(), run.disk_space():  # one process trains a run
        try:
            fit(task, state, callbacks)  # the loop every run shares
            if state.stop == "interrupt":  # inside an epoch: the last epoch's checkpoint stands
                raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            print("\n" + run.interrupted("clsf gan"), file=sys.stderr)
            e.reported = True  # said once, here
            raise
        _finish(run, model, state, cfg.epochs * steps_per_epoch, fixed)
    if not quiet:
        print(f"-> {run}")
    return run.path


def _resume(path) -> tuple[RunDir, Config, RunState]:
    run = RunDir.open(path, "last")
    if run.kind().name != KIND:
        raise UserError(f"{run} is a classifier run, not a GAN run; resume it with clsf train --resume {run}.")
    cfg = run.validate("last")  # every file it reads, its two networks' arrays too, before anything changes
    return run, cfg, RunState.from_meta(run.meta("last"), run.metrics(), extra_keys=("initial", "quality"))


def _data(cfg: Config) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Training images (N, 28, 28, 1) in 0..1 (the generator's sigmoid range), real test images
    (uint8) for the judge, and the image shape."""
    ds = load_dataset(cfg.data.name, cfg.data.data_dir)
    if ds.image_shape != (28, 28, 1):
        raise UserError(f"the GAN makes 28x28 grayscale images but {ds.source} holds {'x'.join(map(str, ds.image_shape))}; "
                        "use MNIST-like data (e.g. --data mnist).")
    train = subset(ds["train"], cfg.data.train_subset, cfg.seed, "train")  # seeded, stratified; all by default
    real = (ds["test"] if "test" in ds.splits else ds["train"]).x[:QUALITY_IMAGES]
    return train.x.astype(np.float32) / 255, real, ds.image_shape


class GanEpochs(Task):
    """The GAN pair's epochs for the shared loop: (discriminator, generator) steps over the images in
    the epoch's order, sample grids every gan.sample_every steps. It reports no steps to the
    callbacks: a GAN checkpoints at epochs' ends only, and an epoch stopped inside starts again
    whole on resume (its latents are a function of (seed, epoch))."""

    def __init__(self, model, x: np.ndarray, cfg: Config, steps_per_epoch: int, judge, fixed: np.ndarray,
                 probe: np.ndarray, run: RunDir, quiet: bool, logs: cb.Logs):
        self.model, self.x, self.cfg, self.steps_per_epoch, self.judge = model, x, cfg, steps_per_epoch, judge
        self.fixed, self.probe, self.run, self.quiet, self.logs = fixed, probe, run, quiet, logs

    def train_epoch(self, state: RunState, callbacks: cb.Callback) -> dict | None:
        bar = Bar(not self.quiet, state.epoch, self.cfg.epochs)
        try:
            return self._epoch(state, bar)
        finally:
            bar.close()

    def _epoch(self, state: RunState, bar: Bar) -> dict | None:
        cfg, x, model, judge, steps = self.cfg, self.x, self.model, self.judge, self.steps_per_epoch
        epoch = state.epoch
        rng = np.random.default_rng([cfg.seed, epoch, 7])  # latents and label noise: a function of (seed, epoch)
        order = epoch_plan(len(x), Preprocess(), cfg.seed, epoch).order

        def on_step(s: int) -> None:  # after each pair of steps
            state.global_step = epoch * steps + s + 1
            meter.stop_requested = state.stop is not None  # Ctrl-C (the Interrupt callback)

        # the meter's loss is d_loss + g_loss: non-finite when either is (the stop every run shares)
        meter = Meter(epoch, epoch * steps, len(x), cfg.batch_size, on_step, fix="gan.d_lr and gan.g_lr")
        sums, t0 = np.zeros(4), time.perf_counter()
        for s in range(steps):
            real = x[order[s * cfg.batch_size:(s + 1) * cfg.batch_size]]  # (B, 28, 28, 1)
            b = len(real)
            z, z2 = (rng.normal(size=(b, cfg.gan.latent)).astype(np.float32) for _ in range(2))
            noise = (cfg.gan.label_noise * rng.uniform(size=(2 * b, 1))).astype(np.float32)
            out = model.step(real, z, z2, noise)  # d_loss, g_loss, d_acc_real, d_acc_fake
            sums += np.array(out) * b
            meter.add(s, out[0] + out[1], 0)
            bar(s, steps, d_loss=out[0], g_loss=out[1])
            if state.global_step % cfg.gan.sample_every == 0:
                self._samples(state)
            if meter.stop_requested:  # Ctrl-C: the last epoch's checkpoint stands
                return None
        seconds = time.perf_counter() - t0
        return dict(zip(COLUMNS[1:5], (sums / len(x)).tolist()), epoch=epoch + 1, seconds=seconds,
                    images_per_s=len(x) / seconds, **(judge.score(model.generate(self.probe)) if judge else {}))

    def _samples(self, state: RunState) -> None:
        """The fixed latents' grid at this step (in TensorBoard too), and the judge's scores."""
        step, grid = state.global_step, self.run.sample_grid(state.global_step)
        _save_png(_grid(self.model.generate(self.fixed)), grid)
        if self.logs.tb is not None:  # the run's TensorBoard writer (open once the loop has started)
            self.logs.tb.images(step, {"samples": grid.read_bytes()})
        if self.judge:  # the quality curve between epochs, at every sample grid
            state.extra["quality"].append({"step": step, **self.judge.score(self.model.generate(self.probe))})


class _EpochLine(cb.Callback):
    def __init__(self, epochs: int, quiet: bool):
        self.epochs, self.quiet = epochs, quiet

    def on_epoch_end(self, state, row, improved):
        if not self.quiet:
            print(f"epoch {row['epoch']}/{self.epochs}  " + "  ".join(f"{k} {row[k]:.4f}" for k in COLUMNS[1:8] if k in row)
                  + f"  {row['seconds']:.1f}s")


class _QualityLog(cb.Callback):
    """samples/quality.csv: the judge's scores at every sample grid."""

    def __init__(self, run: RunDir):
        self.run = run

    def on_epoch_end(self, state, row, improved):
        quality = state.extra.get("quality")
        if quality:  # step 0: the untrained generator, the baseline every later row improves on
            initial = [{"step": 0, **state.extra["initial"]}] if state.extra.get("initial") else []
            write_text(self.run.quality_csv, "step,confident,class_entropy,frechet\n" + "".join(
                f"{q['step']},{q['confident']},{q['class_entropy']},{q['frechet']}\n" for q in initial + quality))


def _finish(run: RunDir, model, state: RunState, last_step: int, fixed: np.ndarray) -> None:
    """The final grid, samples/progress.png (the first row of every grid, labelled with its step),
    and final.json last."""
    _save_png(_grid(model.generate(fixed)), run.sample_grid(last_step))
    _save_png(_labelled_rows([(int(p.stem.split("-")[1]), _first_row(p)) for p in run.sample_grids()]), run.progress_png)
    run.write_final({"kind": "gan", "epochs": len(state.rows), "initial": state.extra.get("initial"), **state.rows[-1]})


def _first_row(path: Path) -> np.ndarray:
    from PIL import Image

    a = np.asarray(Image.open(path))
    a = a[..., None] if a.ndim == 2 else a
    rows = 8  # a grid of 64 samples
    return a[: (a.shape[0] + GRID_GAP) // rows - GRID_GAP]  # the first row


def _labelled_rows(rows: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Rows of samples stacked with a white gap, each with "step N" written in a margin on its left."""
    from PIL import Image, ImageDraw

    margin, (h, w, c) = 90, rows[0][1].shape
    out = Image.new("L" if c == 1 else "RGB", (margin + w, len(rows) * (h + GRID_GAP) - GRID_GAP), "white")
    draw = ImageDraw.Draw(out)
    for i, (step, row) in enumerate(rows):
        y = i * (h + GRID_GAP)
        out.paste(Image.fromarray(row[..., 0] if c == 1 else row), (margin, y))
        draw.text((6, y + h // 2 - 6), f"step {step}", fill="black")
    a = np.asarray(out)
    return a[..., None] if a.ndim == 2 else a
