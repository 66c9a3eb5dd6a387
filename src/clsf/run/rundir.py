"""The run directory, the same shape for every engine:

  runs/<time>-<model>-<engine>-<data>/
    config.yaml        fully resolved config (reload with --config)
    env.json           package versions, device, threads, git commit
    metrics.csv        a row per epoch: epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_s,peak_mem_mb
    tb/                TensorBoard scalars
    checkpoints/init/  the weights before the first step + logits.npz (step-0 logits of up to 256 probe images)
    checkpoints/last/  weights.npz (framework-neutral) + state.* (optimizer etc.) + meta.json
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

import numpy as np

from clsf.errors import DiskFull, UserError

# peak_mem_mb: the training process's peak resident memory so far (host RAM, MiB)
METRICS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s", "peak_mem_mb"]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).name if os.sep in text or "/" in text else text).strip("_")[:40]


def new_run_dir(runs_dir: str, model: str, engine: str, data: str, name: str | None = None) -> Path:
    base = Path(runs_dir)
    stem = name or f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(model)}-{engine}-{slug(data)}"
    path, i = base / stem, 1
    while path.exists():  # never reuse (and so never overwrite) an existing run
        i += 1
        path = base / f"{stem}-{i}"
    try:
        (path / "checkpoints").mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot create run directory {path} ({e.strerror}); choose another --runs-dir.") from None
    return path


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


def open_run(run: str | Path, which: str = "last") -> tuple[Path, "Config"]:
    """A run directory and its resolved config, checking it has checkpoints/<which>."""
    from clsf.config import from_dict, read_yaml

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a clsf run directory (no config.yaml); pass the folder `clsf train` printed.")
    cfg = from_dict(read_yaml(run / "config.yaml", "run config") or {})
    checkpoint_meta(run, which)
    return run, cfg


def environment(engine: str, device: str, facts: dict | None = None) -> dict:
    """env.json's start: package versions, machine, git commit, and the engine's own `facts`
    (threads, devices: Engine.environment())."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("clsf", "numpy", "tensorflow-cpu", "tensorflow", "keras", "torch", "pillow", "matplotlib", "pyyaml"):
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


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v) if v != "" else None) for k, v in row.items()} for row in csv.DictReader(f)]


def write_metrics(run: Path, rows: list[dict], columns: list[str] = METRICS) -> None:
    """Rewrite metrics.csv whole (atomically), so a resumed run never duplicates or tears a row."""
    tmp = run / "metrics.csv.part"
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else (repr(float(r[k])) if isinstance(r[k], float) else r[k])) for k in columns})
        os.replace(tmp, run / "metrics.csv")
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(engine, run: Path, which: str, meta: dict) -> None:
    """Write checkpoints/<which> as a whole: into a temporary folder first, then swap it in, so an
    interruption leaves either the old checkpoint or the new one, never half of one."""
    ckpts = run / "checkpoints"
    tmp, final, old = ckpts / f".{which}.tmp", ckpts / which, ckpts / f".{which}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        engine.save(tmp)
        write_json(tmp / "meta.json", meta)
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
        then = (f"checkpoints/last holds epoch {checkpoint_meta(run)['epoch']} intact — free space, then continue with "
                f"clsf train --resume {run}" if last.is_dir() else "no epoch finished — free space and start it again")
        raise DiskFull(f"no space left on the device holding {run} ({free / 2**20:.0f} MiB free; a checkpoint needs "
                       f"about {need / 2**20:.0f} MiB); {then}.") from None


def peak_memory_mb() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def init_folder(path: str | Path) -> Path:
    """The checkpoint folder `init_from` names: a folder holding weights.npz, or a run directory
    (its checkpoints/last)."""
    p = Path(path)
    for folder in (p, p / "checkpoints" / "last"):
        if (folder / "weights.npz").is_file():
            return folder
    raise UserError(f"init_from '{path}' holds no weights.npz; give a checkpoint folder (e.g. RUN/checkpoints/best) or a run directory.")


def recover_checkpoint(run: Path, which: str = "last") -> None:
    """Finish a checkpoint swap a kill interrupted (between moving the old folder aside and moving
    the new one in): the new folder is complete once its meta.json exists (written last), else the
    old one stands."""
    ckpts = run / "checkpoints"
    final, tmp, old = ckpts / which, ckpts / f".{which}.tmp", ckpts / f".{which}.old"
    if final.exists():
        return
    if (tmp / "meta.json").is_file():
        os.replace(tmp, final)
    elif old.is_dir():
        os.replace(old, final)


def checkpoint_meta(run: Path, which: str = "last") -> dict:
    recover_checkpoint(run, which)
    path = run / "checkpoints" / which / "meta.json"
    if not path.exists():
        raise UserError(f"{run} has no checkpoints/{which}; it is not a clsf run directory or it never finished an epoch.")
    return read_json(path)
