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

Beside it: clsf.run.files writes every file whole (a temporary name, then a rename);
clsf.run.checkpoints makes, swaps, copies and recovers the checkpoint folders;
clsf.run.validation checks a run before a command changes anything; clsf.run.environment gathers
env.json's facts.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clsf.engines.checkpoint import Checkpoint
from clsf.errors import UserError
from clsf.run.checkpoints import (CHECKPOINTS, MODEL_CHECKPOINT, copy_checkpoint, disk_space, folder, recover_checkpoint,
                                  save_checkpoint)
from clsf.run.files import data_slug, fresh_path, read_json, save_arrays, slug, write_json, write_text
from clsf.run.validation import predictions_problem, validate

if TYPE_CHECKING:
    from clsf.config import Config
    from clsf.models.spec import ModelSpec

CLASSIFIER = "classifier"


@dataclass(frozen=True)
class RunKind:
    """What a run directory holds, as its env.json says: a classifier (no "kind" there), or a kind
    another package trains (`"kind": "gan"`: clsf.gans), which lists the arrays each of its
    checkpoints holds ("checkpoint_files") and resumes with its own command, `clsf KIND --resume`.
    The core knows no other kind by name: a new kind needs no change here."""

    name: str = CLASSIFIER
    files: tuple[str, ...] = ()  # another kind's checkpoint arrays, e.g. ("generator.npz", "discriminator.npz")

    @property
    def classifies(self) -> bool:  # class names, a model file, weights.npz, predictions.npz
        return self.name == CLASSIFIER

    @property
    def command(self) -> str:  # the clsf command that trains and resumes it
        return "train" if self.classifies else self.name


# peak_mem_mb: the training process's peak resident memory so far (host RAM, MiB)
METRICS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s", "peak_mem_mb"]


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
        """Every file a command reads, checked before it changes anything (clsf.run.validation)."""
        return validate(self, which)

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

    def kind(self) -> RunKind:
        """The run's kind, from env.json (a classifier where it names none)."""
        env = self.env()
        name, files = env.get("kind", CLASSIFIER), env.get("checkpoint_files", [])
        if not (isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name)) or not (
                isinstance(files, list) and all(isinstance(f, str) and re.fullmatch(r"[a-z_]+\.npz", f) for f in files)):
            raise self.damaged(self.ENV, "its kind is not a run kind's name with its checkpoint files")
        return RunKind(name, tuple(files))

    def update_env(self, **values) -> None:
        self.write_env({**self.env(), **values})

    def add_resume(self, entry: dict) -> None:
        """A resume goes on record; the environment the run started in stays as it was."""
        env = self.env()
        self.write_env({**env, "resumes": env.get("resumes", []) + [entry]})

    def data_facts(self) -> dict:
        data = self.env().get("data")
        if not isinstance(data, dict) or not isinstance(data.get("class_names"), list) or \
                not isinstance(data.get("image_shape"), list) or len(data["image_shape"]) != 3:
            raise (UserError(f"{self} has no {self.ENV}; it is not a finished clsf classifier run.")
                   if not (self.path / self.ENV).exists() else self.damaged(self.ENV, "its data entry lacks class_names or image_shape"))
        return data

    @property
    def class_names(self) -> list[str]:
        return self.data_facts()["class_names"]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.data_facts()["image_shape"])

    # -- checkpoints
    def checkpoint(self, which: str) -> Checkpoint:
        return folder(self.path, which)

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
        why = predictions_problem(arrays, len(self.class_names) if self.kind().classifies else None)
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




