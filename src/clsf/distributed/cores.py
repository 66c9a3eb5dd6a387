"""Processes sharing one machine's cores: each one's share of threads, and the refusal of more
processes than cores. Every command that starts several trainings on one machine (`clsf train
--nproc`, compare, sweep and tune's runs, tune's workers) takes both from here.

OpenMP pools of processes sharing cores spin against each other: two torch processes with 2 threads
each on 2 cores ran 30x slower than one, not 2x (bench/results/observations.md, O3).
"""

from __future__ import annotations

import os

from clsf.errors import UserError


def threads_each(processes: int) -> int:
    """Each of `processes` trainings at once on this machine: its share of the cores (at least 1)."""
    return max(1, (os.cpu_count() or 1) // processes)


def thread_env(threads: int, keep: bool = True, tf_pools: bool = True) -> dict:
    """The environment that gives a process `threads` threads: OpenMP's (torch) and, with `tf_pools`,
    TensorFlow's intra-op pool, its inter-op pool at 1. `keep`: a count already set in this
    environment wins (the user's; not a Ray worker's, set for itself)."""
    want = {"OMP_NUM_THREADS": str(threads)}
    if tf_pools:
        want |= {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}
    return {k: os.environ.get(k, v) if keep else v for k, v in want.items()}


def check_cores(processes: int, flag: str) -> None:
    """More processes than cores (`flag` asked for them, e.g. --nproc) is refused in one line, unless
    CLSF_OVERSUBSCRIBE is set: each would get a fraction of a core, and their pools would spin."""
    cores = os.cpu_count() or 1
    if processes > cores and not os.environ.get("CLSF_OVERSUBSCRIBE"):
        raise UserError(f"{flag} {processes} is more processes than this machine's {cores} cores (each would get a "
                        f"fraction of one); use {flag} {cores} or fewer, or set CLSF_OVERSUBSCRIBE=1 to run them anyway.")
