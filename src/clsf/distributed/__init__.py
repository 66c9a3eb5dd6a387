"""Several processes, one run: which process this is, and which images of a batch are its own.

clsf never distributes anything itself: torch runs under `torchrun` (DistributedDataParallel) and
the TensorFlow engines under `tf.distribute` (MultiWorkerMirroredStrategy with TF_CONFIG). This
module only reads what those launchers put in the environment and fixes the one rule every engine
shares, framework-free:

  - `batch_size` is per process; a step consumes the next `batch_size x processes` images of the
    epoch's plan (clsf.data.order), the global batch, so the data order does not depend on the
    process count.
  - process r takes the r-th contiguous part of the global batch (`part`); the parts differ by at
    most one image (the epoch's last, short batch), and each process's loss is the sum of its
    per-image losses divided by the global batch size, so the averaged (torch) or summed (tf)
    gradient is the gradient of the global batch's mean loss: 2 processes x batch B train exactly
    as 1 process x batch 2B.
  - evaluation splits the images the same way and gathers the logits, so every process computes
    the same metrics and makes the same decisions (best epoch, early stop); only the lead process
    (rank 0, TF's chief) writes the run directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    """Replicas (model copies that each take a share of every batch) and which are this process's.
    torch: one replica per process. tf.distribute: one per GPU of the process, else one per process."""

    rank: int = 0  # this process's first replica, 0..size-1
    size: int = 1  # replicas in the run: the global batch is batch_size x size
    local_rank: int = 0  # this process on its machine (which GPU it takes, torch)
    local_replicas: int = 1  # replicas this process runs (tf.distribute: its GPUs)

    @property
    def lead(self) -> bool:  # writes the run directory and prints
        return self.rank == 0

    @property
    def processes(self) -> int:
        return self.size // self.local_replicas


def torch_world() -> World:
    """What torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); one process otherwise."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def tf_world() -> World:
    """TF_CONFIG's worker list and this task's index (worker 0 is the chief), times the GPUs each
    worker mirrors over (MirroredStrategy); one replica otherwise."""
    from clsf.frameworks import import_tf

    gpus = max(1, len(import_tf().config.list_physical_devices("GPU")))
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return World(0, gpus, 0, gpus)
    from clsf.errors import UserError

    try:
        conf = json.loads(raw)
        workers = conf["cluster"]["worker"]
        task = conf["task"]
        if task["type"] != "worker" or "chief" in conf["cluster"]:
            raise ValueError("clsf runs every TF process as a worker (worker 0 is the chief)")
        return World(int(task["index"]) * gpus, len(workers) * gpus, 0, gpus)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"TF_CONFIG is not a worker cluster clsf can run ({e}); set it as "
                        '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": I}}.') from None


def part(start: int, stop: int, rank: int, size: int) -> tuple[int, int]:
    """Process `rank`'s contiguous share [a, b) of positions [start, stop) (a global batch, or a split
    to evaluate); the shares tile it in rank order and differ by at most one; rank 0's is never
    empty."""
    n = stop - start
    return start - (-n * rank // size), start - (-n * (rank + 1) // size)


def share(start: int, stop: int, rank: int, size: int) -> tuple[int, int, float]:
    """What replica `rank` trains on in the global batch [start, stop): positions [a, b) and the
    weight of their summed per-image loss in the global batch's mean, 1 / (stop - start). A replica
    whose share is empty (an epoch's last batch holding fewer images than replicas) still joins the
    step, which all-reduces: on the batch's first image, with weight 0."""
    a, b = part(start, stop, rank, size)
    return (a, b, 1.0 / (stop - start)) if b > a else (start, start + 1, 0.0)
