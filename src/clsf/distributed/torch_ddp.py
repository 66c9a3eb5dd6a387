"""The torch engine under torchrun: the process group, DDP, and the few collectives the loop needs.

gloo on a CPU, nccl on GPUs (one GPU per process, LOCAL_RANK's). Every collective waits at most
`dist_timeout_s` seconds for the others; a process that died shows up sooner, as a closed
connection. Either way the survivors stop with one line (`PeerLost`) instead of hanging.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

from clsf.distributed import World, part
from clsf.errors import PeerLost


def join(world: World, device: torch.device, timeout_s: float) -> None:
    """Enter the process group torchrun prepared (MASTER_ADDR/PORT, RANK, WORLD_SIZE)."""
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=device if device.type == "cuda" else None)
    atexit.register(leave)  # a group left to the interpreter's teardown aborts the process (gloo's threads)


_BROKEN = [False]  # a peer was lost: the group cannot be left cleanly


def leave(together: bool = False) -> None:
    """Leave the process group; `together`: after a barrier, so no process tears its side down while
    another still talks to it (gloo may abort the early leaver: bench/results/observations.md, O8).
    After a lost peer (the process is exiting, its line said) tearing gloo's side down can abort the
    process (O12): it ends at once instead, with a lost peer's exit status (6)."""
    if _BROKEN[0] and not together:  # at exit, from atexit: the run's files are written, its line said
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(PeerLost.exit_code)
    if dist.is_initialized():
        if together:
            with collective("finishing"):
                dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def collective(what: str):
    """A peer that died (a closed connection) or stopped answering (dist_timeout_s) inside the block
    -- a collective of ours or DDP's gradient all-reduce in backward -- becomes one clear line."""
    try:
        yield
    except (RuntimeError, dist.DistError) as e:
        text = str(e)
        if not any(k in text for k in ("gloo", "NCCL", "nccl", "Connection", "Timed out", "timed out")):
            raise  # not the process group's: a real error, with its traceback
        _BROKEN[0] = True
        raise PeerLost(f"another process stopped answering while {what} ({text.splitlines()[0][:160]})") from None


def sum_across(values: list[float], device: torch.device) -> list[float]:
    """The sum of each value over all processes (a step's loss and correct count)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    with collective("summing a step's metrics"):
        dist.all_reduce(t)
    return t.tolist()


def gather_rows(local: np.ndarray, n: int, world: World, device: torch.device) -> np.ndarray:
    """Every process's share of n rows (`part` order) concatenated, on every process."""
    sizes = [b - a for a, b in (part(0, n, r, world.size) for r in range(world.size))]
    padded = torch.zeros((max(sizes),) + local.shape[1:], dtype=torch.float32, device=device)
    padded[:len(local)] = torch.from_numpy(local).to(device)
    out = [torch.empty_like(padded) for _ in sizes]
    with collective("gathering evaluation logits"):
        dist.all_gather(out, padded)
    return np.concatenate([o[:k].cpu().numpy() for o, k in zip(out, sizes)])


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every process: DDP only syncs them at
    the start of a training forward, and evaluation is split across processes."""
    with collective("sharing batch-norm statistics"):
        for b in model.buffers():
            dist.broadcast(b, 0)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around the module: gradients averaged over processes in backward, rank 0's weights and
    buffers broadcast at construction (all processes start from the same initialisation anyway)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
