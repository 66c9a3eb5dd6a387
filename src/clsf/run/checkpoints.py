"""A run's checkpoints/ folder: which checkpoints a run has, and each one written, copied and
recovered as a whole -- into a temporary folder, then swapped in by renames, so an interruption
leaves the old checkpoint or the new one, never half of one; a write that fails for lack of space
is one line. The files inside a checkpoint are clsf.engines.checkpoint's."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from clsf.engines.checkpoint import Checkpoint
from clsf.errors import DiskFull, UserError
from clsf.run.files import read_json, write_json

MODEL_CHECKPOINT = "last"  # the run's model: what it ended with (Keras' fit keeps the last weights too)


CHECKPOINTS = ("last", "best", "init")


CHECKPOINT_HELP = ("which weights: the run's model by default (checkpoints/last, what final.json reports); "
                   "best: the epoch with the lowest val_loss")


def folder(run: str | Path, which: str) -> Checkpoint:
    """checkpoints/<which> of the run at `run`."""
    return Checkpoint(Path(run) / "checkpoints" / which)


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
        then = (f"checkpoints/last holds epoch {read_json(Checkpoint(last).meta)['epoch']} intact — free space, then continue with "
                f"clsf train --resume {run}" if last.is_dir() else "no epoch finished, so nothing is kept — free space "
                "and start it again")
        needs = f"; a checkpoint needs about {max(need / 2**20, 1):.0f} MiB" if need else ""
        raise DiskFull(f"no space left on the device holding {run} ({free / 2**20:.0f} MiB free{needs}); {then}.") from None


def has_weights(folder: str | Path) -> bool:
    """A checkpoint folder (e.g. checkpoints/init) that holds its framework-neutral weights."""
    return Checkpoint(folder).weights.is_file()


def init_folder(path: str | Path) -> Checkpoint:
    """The checkpoint folder `init_from` names: a folder holding its neutral weights, or a run
    directory (its model's checkpoint)."""
    p = Path(path)
    for ckpt in (Checkpoint(p), folder(p, MODEL_CHECKPOINT)):
        if ckpt.weights.is_file():
            return ckpt
    raise UserError(f"init_from '{path}' holds no {Checkpoint(p).weights.name}; give a checkpoint folder (e.g. RUN/checkpoints/best) or a run directory.")
