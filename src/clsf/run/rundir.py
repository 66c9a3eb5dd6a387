"""The run directory, the same shape for every engine; `RunDir` is the only code that knows its
file names:

  runs/<time>-<model>-<engine>-<data>/
    config.yaml        fully resolved config (reload with --config)
    env.json           package versions, device, threads, git commit
    metrics.csv        a row per epoch: epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_s,peak_mem_mb
    tb/                TensorBoard scalars
    checkpoints/init/  the weights before the first step + logits.npz (step-0 logits of up to 256 probe images)
    checkpoints/last/  weights.npz (framework-neutral) + state.* (optimizer etc.) + meta.json; with optim.ema,
                       weights.npz is the weight average and train_weights.npz + averaging.json what trains
                       (a checkpoint folder's file names: clsf.engines.checkpoint.Checkpoint, and nowhere else)
    checkpoints/best/  the same, for the best val_loss so far
    final.json         test_loss, test_acc, per-class accuracy, confusion matrix
    predictions.npz    test logits and labels, and the most confident mistakes (images included)
    model.yaml         the exact network as a model file (pinned input shape and class count)
    summary.txt, history.png, confusion.png
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clsf.engines.checkpoint import Checkpoint
from clsf.errors import DiskFull, UserError

if TYPE_CHECKING:
    from clsf.config import Config
    from clsf.models.spec import ModelSpec

# peak_mem_mb: the training process's peak resident memory so far (host RAM, MiB)
METRICS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s", "peak_mem_mb"]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).name if os.sep in text or "/" in text else text).strip("_")[:40]


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip", ".npz")


def fresh_path(path: Path) -> Path:
    """`path`, or path-2, path-3, ... when it is taken: what clsf creates never replaces what exists."""
    path, i, stem = Path(path), 1, Path(path)
    while path.exists():
        i += 1
        path = stem.with_name(f"{stem.name}-{i}")
    return path


def data_slug(data: str) -> str:
    """A dataset's part of a run's name: the file's stem, so a run folder never looks like an archive
    (cifar10-jpeg.tar.gz -> cifar10-jpeg)."""
    text = slug(data)
    for suffix in ARCHIVE_SUFFIXES:
        if text.lower().endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)]
    return text


def write_text(path: Path, text: str) -> None:
    """Write whole or not at all: a temporary name, then an atomic rename."""
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write (a full disk): no .part left behind


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def save_arrays(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def environment(engine: str, device: str, facts: dict | None = None) -> dict:
    """env.json's start: package versions, machine, git commit, and the engine's own `facts`
    (threads, devices: Engine.environment())."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("clsf", "numpy", "tensorflow-cpu", "tensorflow", "keras", "torch", "jax", "jaxlib", "pillow", "matplotlib",
                "pyyaml"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "engine": engine, "device": device, "python": platform.python_version(),
        "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "threads": None, **(facts or {}), "packages": versions, "git_commit": commit,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save_checkpoint(engine, run: Path, which: str, meta: dict) -> None:
    """Write checkpoints/<which> as a whole: into a temporary folder first, then swap it in, so an
    interruption leaves either the old checkpoint or the new one, never half of one."""
    ckpts = run / "checkpoints"
    tmp, final, old = ckpts / f".{which}.tmp", ckpts / which, ckpts / f".{which}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        engine.save(Checkpoint(tmp))
        write_json(Checkpoint(tmp).meta, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed write (a full disk, a kill signal) leaves the old checkpoint only
        raise
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def copy_checkpoint(run: Path, src: str, dst: str) -> None:
    """checkpoints/<src> copied to <dst> with the same swap as save_checkpoint (renames only, so a
    kill leaves the old or the new copy; recover_checkpoint finishes a cut swap)."""
    ckpts = run / "checkpoints"
    tmp, old = ckpts / f".{dst}.tmp", ckpts / f".{dst}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ckpts / src, tmp)
    shutil.rmtree(old, ignore_errors=True)
    if (ckpts / dst).exists():
        os.replace(ckpts / dst, old)
    os.replace(tmp, ckpts / dst)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def disk_space(run: Path):
    """Turn a write that failed for lack of space into one line: where, how much, and what to do."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        last = run / "checkpoints" / "last"
        need = 2 * sum(p.stat().st_size for p in last.glob("*")) if last.is_dir() else 0  # new + old while swapping
        free = shutil.disk_usage(run).free
        then = (f"checkpoints/last holds epoch {RunDir(run).meta()['epoch']} intact — free space, then continue with "
                f"clsf train --resume {run}" if last.is_dir() else "no epoch finished, so nothing is kept — free space "
                "and start it again")
        needs = f"; a checkpoint needs about {max(need / 2**20, 1):.0f} MiB" if need else ""
        raise DiskFull(f"no space left on the device holding {run} ({free / 2**20:.0f} MiB free{needs}); {then}.") from None


def recover_checkpoint(run: Path, which: str = "last") -> None:
    """Finish a checkpoint swap a kill interrupted (between moving the old folder aside and moving
    the new one in): the new folder is complete once its meta.json exists (written last), else the
    old one stands."""
    ckpts = run / "checkpoints"
    final, tmp, old = ckpts / which, ckpts / f".{which}.tmp", ckpts / f".{which}.old"
    if final.exists():
        return
    if Checkpoint(tmp).meta.is_file():
        os.replace(tmp, final)
    elif old.is_dir():
        os.replace(old, final)


def peak_memory_mb() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)




MODEL_CHECKPOINT = "last"  # the run's model: what it ended with (Keras' fit keeps the last weights too)
CHECKPOINTS = ("last", "best", "init")
CHECKPOINT_HELP = ("which weights: the run's model by default (checkpoints/last, what final.json reports); "
                   "best: the epoch with the lowest val_loss")


class RunDir:
    """One run directory: its files by meaning, read and written whole (a temporary name, then a
    rename), so a kill leaves the old file or the new one."""

    CONFIG, MODEL, ENV, METRICS_CSV, FINAL = "config.yaml", "model.yaml", "env.json", "metrics.csv", "final.json"
    PREDICTIONS, SUMMARY, HISTORY, CONFUSION = "predictions.npz", "summary.txt", "history.png", "confusion.png"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:  # run / "export": folders that belong to a part of clsf
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    # -- creating and opening
    @classmethod
    def create(cls, runs_dir: str, model: str, engine: str, data: str, name: str | None = None) -> RunDir:
        base = Path(runs_dir)
        stem = name or f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(model)}-{engine}-{data_slug(data)}"
        path = fresh_path(base / stem)  # never reuse (and so never overwrite) an existing run
        try:
            (path / "checkpoints").mkdir(parents=True)
        except OSError as e:
            raise UserError(f"cannot create run directory {path} ({e.strerror}); choose another --runs-dir.") from None
        return cls(path)

    @classmethod
    def is_run(cls, path: str | Path) -> bool:
        return (Path(path) / cls.CONFIG).is_file()

    @classmethod
    def open(cls, path: str | Path, which: str | None = "last") -> RunDir:
        """An existing run, checked to hold config.yaml and (unless `which` is None) checkpoints/<which>."""
        run = cls(path)
        if not cls.is_run(path):
            raise UserError(f"{run} is not a clsf run directory (no {cls.CONFIG}); pass the folder `clsf train` printed.")
        if which is not None:
            run.meta(which)
        return run

    def validate(self, which: str | None = None) -> Config:
        """Every file a command reads, checked before it changes anything: config, model file and
        environment parse and hold what they must, the checkpoint's meta and weights read back, and
        the logs and results that exist parse. Damage is one line naming the file (UserError)."""
        self._no_links()
        cfg = self.config()
        spec = None
        if self.has_model_file():
            try:
                spec = self.model_spec()
            except (UserError, ValueError, TypeError, AttributeError, KeyError) as e:
                raise self.damaged(self.MODEL, str(e).split(";")[0][:120] or type(e).__name__) from None
        gan = self.env().get("kind") == "gan"  # env.json read once here; a GAN's weights are its own files
        if not gan:
            self._data()
        if which is not None:
            self.meta(which)
            ckpt = self.checkpoint(which)
            for path in (ckpt.weights, ckpt.train_weights):  # the second only with optim.ema
                if (not gan and path == ckpt.weights) or path.exists():
                    _check_weights(self, which, path, None if gan else spec)
        self.metrics()
        self.final()
        self.predictions()  # where it exists: the one reader, which names the file if it is damaged
        return cfg

    def _no_links(self) -> None:
        """A symbolic link inside a run directory is damage: writing a checkpoint through one would
        change files outside the run (and a swap of folders would leave links behind)."""
        for folder, dirs, files in os.walk(self.path):
            for name in dirs + files:
                p = Path(folder) / name
                if p.is_symlink():
                    raise UserError(f"{p} is a symbolic link (to {os.readlink(p)}); a run directory holds its own files — "
                                    "replace the link with a copy of what it points to; nothing was changed.")

    # -- config, model file, environment
    def damaged(self, name: str, why: str) -> UserError:
        """One line for a file of the run that cannot be used: which, why, and what to do."""
        return UserError(f"{self.path / name} is damaged ({why}); restore it from a copy of the run, or start the run "
                         "again — nothing was changed.")

    def config(self) -> Config:
        from clsf.config import from_dict

        data = self.raw_config()
        try:
            return from_dict(data)
        except UserError as e:
            raise self.damaged(self.CONFIG, str(e).rstrip(".")) from None
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            raise self.damaged(self.CONFIG, f"{type(e).__name__}: {e}") from None

    def raw_config(self) -> dict:
        """config.yaml as plain data, for reports that must not depend on today's config keys."""
        from clsf.config import SECTIONS, read_yaml

        try:
            data = read_yaml(self.path / self.CONFIG, "run config")
        except (UnicodeDecodeError, OSError) as e:
            raise self.damaged(self.CONFIG, type(e).__name__) from None
        if not isinstance(data, dict) or not data:
            raise self.damaged(self.CONFIG, "it holds no mapping of config keys")
        missing = [name for name in SECTIONS if not isinstance(data.get(name), dict)]  # resolved: every section written out
        if missing:
            raise self.damaged(self.CONFIG, f"it has no {', '.join(missing)} section{'s' if len(missing) > 1 else ''} "
                                            "(cut short?)")
        return data

    def write_config(self, cfg: Config) -> None:
        write_text(self.path / self.CONFIG, cfg.to_yaml())  # resolved: dataset statistics and every default written out

    def has_model_file(self) -> bool:
        return (self.path / self.MODEL).is_file()

    def model_spec(self) -> ModelSpec:
        from clsf.models.yaml_spec import load_spec_file

        return load_spec_file(self.path / self.MODEL)

    def write_model(self, spec: ModelSpec) -> None:
        from clsf.models.yaml_spec import spec_to_yaml

        write_text(self.path / self.MODEL, spec_to_yaml(spec, follow_data=False))  # the exact network, reloadable alone

    def _json(self, name: str, keys: tuple[str, ...] = ()) -> dict | None:
        """A JSON file of the run as a mapping holding `keys`; None when it is absent."""
        path = self.path / name
        if not path.exists():
            return None
        try:
            data = read_json(path)
        except (ValueError, UnicodeDecodeError, OSError) as e:
            raise self.damaged(name, f"not JSON: {type(e).__name__}") from None
        if not isinstance(data, dict) or any(k not in data for k in keys):
            raise self.damaged(name, f"it lacks {', '.join(k for k in keys if not isinstance(data, dict) or k not in data)}")
        return data

    def env(self) -> dict:
        return self._json(self.ENV) or {}

    def write_env(self, env: dict) -> None:
        write_json(self.path / self.ENV, env)

    def update_env(self, **values) -> None:
        self.write_env({**self.env(), **values})

    def add_resume(self, entry: dict) -> None:
        """A resume goes on record; the environment the run started in stays as it was."""
        env = self.env()
        self.write_env({**env, "resumes": env.get("resumes", []) + [entry]})

    def _data(self) -> dict:
        data = self.env().get("data")
        if not isinstance(data, dict) or not isinstance(data.get("class_names"), list) or \
                not isinstance(data.get("image_shape"), list) or len(data["image_shape"]) != 3:
            raise (UserError(f"{self} has no {self.ENV}; it is not a finished clsf classifier run.")
                   if not (self.path / self.ENV).exists() else self.damaged(self.ENV, "its data entry lacks class_names or image_shape"))
        return data

    @property
    def class_names(self) -> list[str]:
        return self._data()["class_names"]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self._data()["image_shape"])

    # -- checkpoints
    def checkpoint(self, which: str) -> Checkpoint:
        return Checkpoint(self.path / "checkpoints" / which)

    def has_checkpoint(self, which: str) -> bool:
        recover_checkpoint(self.path, which)
        return self.checkpoint(which).meta.is_file()

    def meta(self, which: str = "last") -> dict:
        if not self.has_checkpoint(which):
            raise UserError(f"{self} has no checkpoints/{which}" + (
                "; it never finished an epoch." if which != "init" and not (self.checkpoint(which)).exists()
                else " (its meta.json is missing); restore it from a copy of the run, or start the run again."))
        meta = self._json(f"checkpoints/{which}/meta.json", ("epoch",))
        if not isinstance(meta["epoch"], int) or meta["epoch"] < 0:
            raise self.damaged(f"checkpoints/{which}/meta.json", "its epoch is not a count")
        if which != "init" and not isinstance(meta.get("rows", []), list):
            raise self.damaged(f"checkpoints/{which}/meta.json", "its rows are not a list")
        return meta

    def save_checkpoint(self, engine, which: str, meta: dict) -> None:
        save_checkpoint(engine, self.path, which, meta)

    def copy_checkpoint(self, src: str, dst: str) -> None:
        copy_checkpoint(self.path, src, dst)

    def model_checkpoint(self, which: str | None = None) -> str:
        """Which checkpoint stands for the run's model: `which`, else the run's own (MODEL_CHECKPOINT)."""
        which = which or MODEL_CHECKPOINT
        if which not in CHECKPOINTS:
            raise UserError(f"checkpoint '{which}' is not known; use one of {', '.join(CHECKPOINTS)}.")
        return which

    def reached(self, which: str = "last") -> str:
        """How far a checkpoint got, e.g. "epoch 5" or "epoch 2, step 3 of epoch 3"."""
        meta = self.meta(which)
        inside = f", step {meta['step']} of epoch {meta['epoch'] + 1}" if meta.get("step") else ""
        return f"epoch {meta['epoch']}{inside}"

    def interrupted(self, command: str) -> str:
        """What an interrupted run says: how far its checkpoint got and the command that continues it."""
        at = self.reached("last") if self.has_checkpoint("last") else "no epoch yet"
        return f"clsf: interrupted; checkpoints/last holds the run up to {at} — continue with: {command} --resume {self}"

    def describe_checkpoint(self, which: str) -> str:
        """e.g. "checkpoints/last (epoch 5)", for every command that loads a run's weights to say so."""
        return f"checkpoints/{which} ({self.reached(which)})"

    def save_init_logits(self, logits: np.ndarray) -> None:
        save_arrays(self.checkpoint("init").logits, logits=logits.astype(np.float32))

    def init_logits(self) -> np.ndarray | None:
        path = self.checkpoint("init").logits
        if not path.exists():
            return None
        with np.load(path) as z:
            return z["logits"]

    # -- logs and results
    def metrics(self) -> list[dict]:
        path = self.path / self.METRICS_CSV
        if not path.exists():
            return []
        try:
            with open(path, newline="") as f:
                rows = [{k: (int(v) if k == "epoch" else float(v) if v != "" else None) for k, v in row.items()}
                        for row in csv.DictReader(f)]
        except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
            raise self.damaged(self.METRICS_CSV, f"{type(e).__name__}: {str(e)[:80]}") from None
        if rows and "epoch" not in rows[0]:
            raise self.damaged(self.METRICS_CSV, "it has no epoch column")
        return rows

    def write_metrics(self, rows: list[dict], columns: list[str] = METRICS) -> None:
        """Rewrite metrics.csv whole (atomically), so a resumed run never duplicates or tears a row."""
        tmp = self.path / (self.METRICS_CSV + ".part")
        try:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, columns)
                w.writeheader()
                for r in rows:
                    w.writerow({k: ("" if r.get(k) is None else (repr(float(r[k])) if isinstance(r[k], float) else r[k]))
                                for k in columns})
            os.replace(tmp, self.path / self.METRICS_CSV)
        finally:
            tmp.unlink(missing_ok=True)

    def final(self) -> dict | None:
        return self._json(self.FINAL)

    def write_final(self, final: dict) -> None:
        write_json(self.path / self.FINAL, final)

    def predictions(self) -> dict | None:
        path = self.path / self.PREDICTIONS
        if not path.exists():
            return None
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise self.damaged(self.PREDICTIONS, type(e).__name__) from None
        why = _predictions_problem(arrays, len(self.class_names) if self.env().get("kind") != "gan" else None)
        if why:
            raise self.damaged(self.PREDICTIONS, why)
        return arrays

    def save_predictions(self, **arrays) -> None:
        save_arrays(self.path / self.PREDICTIONS, **arrays)

    def write_summary(self, text: str) -> None:
        write_text(self.path / self.SUMMARY, text)

    def record_files(self) -> list[Path]:
        """The run's record that exists, as a tracker copies it: config, model file, environment,
        final metrics, summary and pictures (not checkpoints or predictions)."""
        names = (self.CONFIG, self.MODEL, self.ENV, self.FINAL, self.SUMMARY, self.HISTORY, self.CONFUSION)
        return [self.path / n for n in names if (self.path / n).is_file()]

    TRACKING = "tracking.json"  # track=mlflow: where this run is tracked (uri, run_id, experiment)

    def tracking(self) -> dict | None:
        return self._json(self.TRACKING, ("uri", "run_id"))

    def write_tracking(self, where: dict) -> None:
        write_json(self.path / self.TRACKING, where)

    @property
    def history_png(self) -> Path:
        return self.path / self.HISTORY

    @property
    def confusion_png(self) -> Path:
        return self.path / self.CONFUSION

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    @property
    def samples_dir(self) -> Path:  # a GAN's sample grids, progress.png and quality.csv
        return self.path / "samples"

    def sample_grid(self, step: int) -> Path:
        return self.samples_dir / f"step-{step:05d}.png"

    def sample_grids(self) -> list[Path]:
        """A GAN's sample grids, oldest first."""
        return sorted(self.samples_dir.glob("step-*.png"))

    @property
    def progress_png(self) -> Path:
        return self.samples_dir / "progress.png"

    @property
    def quality_csv(self) -> Path:
        return self.samples_dir / "quality.csv"

    def disk_space(self):
        return disk_space(self.path)

    @contextlib.contextmanager
    def lock(self):
        """Held by the process that trains the run (an flock the OS releases if it dies), so a second
        process — a rerun racing an orphan — is refused instead of writing into the same run."""
        import fcntl

        try:
            f = open(self.path / ".lock", "w")
        except OSError as e:  # a read-only place, or one this user may not write to: before anything is changed
            raise self.not_writable(e.strerror or str(e)) from None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another clsf process is training {self}; wait for it to finish or stop it, "
                                "then run the command again.") from None
            yield

    def not_writable(self, why: str) -> UserError:
        return UserError(f"cannot write to {self} ({why}); copy the run somewhere writable and continue it there — "
                         "nothing was changed.")

    def check_writable(self) -> None:
        """Refuse, before any work, a run this process cannot write to (a read-only mount, another
        user's folder)."""
        if not os.access(self.path, os.W_OK) or not os.access(self.path / "checkpoints", os.W_OK):
            raise self.not_writable("read-only file system or no permission")

    def is_locked(self) -> bool:
        """Whether a live process holds the run's lock."""
        import fcntl

        if not (self.path / ".lock").is_file():
            return False
        with open(self.path / ".lock") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False


def _check_npz(run: RunDir, name: str, spec: ModelSpec | None = None) -> None:
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


def _check_weights(run: RunDir, which: str, path: Path, spec: ModelSpec | None) -> None:
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


def _predictions_problem(arrays: dict, classes: int | None) -> str | None:
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


def read_metrics(run: str | Path) -> list[dict]:
    return RunDir(run).metrics()


def checkpoint_meta(run: str | Path, which: str = "last") -> dict:
    return RunDir(run).meta(which)


def find_runs(folder: str | Path) -> list[Path]:
    """Run directories at or below `folder`, sorted by path: folders with a config.yaml and checkpoints
    (not a run's own checkpoints, nor a copy of its record elsewhere: MLflow's mlartifacts/ hold one)."""
    folder = Path(folder)
    if RunDir.is_run(folder):
        return [folder]
    return [cfg.parent for cfg in sorted(folder.rglob(RunDir.CONFIG))
            if "checkpoints" not in cfg.parent.relative_to(folder).parts and (cfg.parent / "checkpoints").is_dir()]


def has_weights(folder: str | Path) -> bool:
    """A checkpoint folder (e.g. checkpoints/init) that holds its framework-neutral weights."""
    return Checkpoint(folder).weights.is_file()


def init_folder(path: str | Path) -> Checkpoint:
    """The checkpoint folder `init_from` names: a folder holding its neutral weights, or a run
    directory (its model's checkpoint)."""
    p = Path(path)
    for ckpt in (Checkpoint(p), RunDir(p).checkpoint(MODEL_CHECKPOINT)):
        if ckpt.weights.is_file():
            return ckpt
    raise UserError(f"init_from '{path}' holds no {Checkpoint(p).weights.name}; give a checkpoint folder (e.g. RUN/checkpoints/best) or a run directory.")
