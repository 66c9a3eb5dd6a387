"""`--executor ray`: the runs of a compare or sweep, or the workers of a tune, as tasks on a Ray cluster.

    ray start --head --port 6379                 # on one machine
    ray start --address HEAD:6379                # on each of the others
    clsf compare ... --out /shared/cmp --executor ray --ray-address HEAD:6379 --cpus-per-run 2

Each run is one Ray task that reserves --cpus-per-run CPUs (and --gpus-per-run GPUs; Ray then sets
CUDA_VISIBLE_DEVICES) on whichever node has them free, and runs there the same `clsf train` process
the local executor runs (runner.train_run), with that many threads, writing into the folder, which
every node must see (a shared filesystem). Ray places the tasks; clsf submits them, waits, and prints
one line per run as it ends, naming the node. A run waits for the run whose initial weights it takes
(compare's first engine) until those are written. `clsf tune --workers K --executor ray` places K
workers the same way, each the command again told to train only (as a local extra worker), taking
trials from the study's storage until it is full; their trial lines are passed on from their logs.

Stopping is as local: Ctrl-C ends the tasks' workers and a killed driver ends its Ray job, whose
workers end with it; either way each `clsf train` gets SIGINT from the kernel as its parent dies
(runner._die_with_parent) and stops at a step with a checkpoint. A node that dies takes its tasks'
processes with it the same way; Ray runs such a task again on another node, where the run resumes from its
checkpoint. Either way the same command again trains only what is missing.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from clsf.config import Config
from clsf.distributed.cores import thread_env
from clsf.errors import UserError
from clsf.experiments import runner
from clsf.run import checkpoints
from clsf.run.folder import Folder


def _on_node(folder: str, name: str, cfg: Config, progress: str, threads: int) -> dict:
    """The task: one run on this node, as the local executor trains it; what it ended as, and where."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    run = Folder(folder).run(name)
    runner.wait_unlocked(run)  # a lost attempt's process may still be writing its checkpoint
    where = {"node": node, "host": socket.gethostname()}
    try:
        return {"outcome": runner.train_run(Path(folder), name, cfg, progress, thread_env(threads, keep=False)), **where}
    except UserError as e:
        return {"outcome": "refused", "error": str(e), **where}


def _tune_worker(argv: list[str], index: int, threads: int, log: str) -> dict:
    """The task: one tune worker on this node -- the command again, told to train only (--worker-of:
    this task's process and the worker's index), its lines in `log`; it stops with a checkpoint if
    this task's process dies (runner._die_with_parent: a lost node, a stopped command)."""
    import ray

    from clsf.experiments.tune import WORKER_FLAG

    where = {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}
    env = {**os.environ, **thread_env(threads, keep=False), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        child = subprocess.Popen([sys.executable, "-m", "clsf", *argv, WORKER_FLAG, f"{os.getpid()}:{index}"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, preexec_fn=functools.partial(runner._die_with_parent, os.getpid()))
        return {"code": child.wait(), **where}


@dataclass
class RayExecutor:
    address: str | None = None  # --ray-address, else $RAY_ADDRESS
    cpus: float = 1.0  # reserved per run; the run's thread count
    gpus: float = 0.0

    def connect(self):
        """The cluster, checked before anything is trained: Ray installed, reachable, with a node that
        can hold one run."""
        import os

        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install -e '.[ray]' (or leave --executor out to run "
                            "here).") from None
        address = self.address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise UserError("--executor ray needs the cluster's address: --ray-address HOST:PORT or RAY_ADDRESS "
                            "(what `ray start --head` printed).")
        if self.cpus <= 0 or self.gpus < 0:
            raise UserError(f"--cpus-per-run {self.cpus:g} / --gpus-per-run {self.gpus:g}: give a positive CPU count "
                            "and a GPU count of 0 or more.")
        if not ray.is_initialized():
            _reachable(address)  # ray.init retries an address with nothing behind it for minutes
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"no Ray cluster at {address} ({str(e).strip().splitlines()[0][:160]}); start one with "
                                "`ray start --head` or give its address.") from None
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= self.cpus and r.get("GPU", 0) >= self.gpus for r in nodes):
            have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "no live node"
            raise UserError(f"no node of the Ray cluster at {address} has {self.cpus:g} CPU and {self.gpus:g} GPU "
                            f"free for a run (nodes: {have}); lower --cpus-per-run/--gpus-per-run or add a node.")
        return ray

    def train_all(self, folder: Path, jobs: list[tuple[str, Config]], kind: str) -> list[str]:
        """Every job not finished yet as a task; the names of runs that failed (others go on)."""
        from clsf.run.progress import RunsClock

        ray = self.connect()
        task = ray.remote(_on_node).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=2)
        total, pending = len(jobs), []
        for i, (name, cfg) in enumerate(jobs):
            if runner.state(Folder(folder).run(name)) == "finished":
                print(f"[{i + 1}/{total}] {name}: finished earlier, skipped")
            else:
                pending.append((i, name, cfg))
        running: dict = {}  # task ref -> (index, name, start)
        failed, clock = [], RunsClock(len(pending), parallel=True)
        try:
            while pending or running:
                waiting = {name for _, name, _ in pending} | {name for _, name, _ in running.values()}
                for job in [j for j in pending if _ready(j[2], waiting)]:
                    pending.remove(job)
                    i, name, cfg = job
                    ref = task.remote(str(folder), name, cfg, f"[{i + 1}/{total}]", max(1, int(self.cpus)))
                    running[ref] = (i, name, time.perf_counter())
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    i, name, t0 = running.pop(ref)
                    outcome, where = _result(ray, ref)
                    if outcome == "refused":  # bad input: every other run would refuse it too
                        raise UserError(f"run {name} refused its input: {where}")
                    if outcome != "finished":
                        failed.append(name)
                    seconds = time.perf_counter() - t0
                    clock.done(seconds, trained=True)
                    print(f"[{i + 1}/{total}] {name}: {runner.outcome_line(Folder(folder).run(name), outcome, seconds)} "
                          f"on {where}; {clock.line(len(pending) + len(running))}", flush=True)
        except (KeyboardInterrupt, UserError) as e:
            _stop(ray, running, [Folder(folder).run(name) for _, name, _ in running.values()])
            if isinstance(e, KeyboardInterrupt):
                finished = sum(runner.state(Folder(folder).run(n)) == "finished" for n, _ in jobs)
                print(f"\nclsf: {kind} stopped with {finished} of {total} runs finished; run the same command again "
                      f"to finish the rest (finished runs are skipped, the interrupted ones resume).", file=sys.stderr)
                e.reported = True
            raise
        return failed

    def tune_workers(self, folder: Path, argv: list[str], workers: int) -> list[str]:
        """`workers` tune workers as tasks, until each has found the study full; their trial lines
        printed as they appear in their logs; what went wrong with any worker (none: [])."""
        ray = self.connect()
        task = ray.remote(_tune_worker).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=2)
        logs = [Folder(folder).log(f"worker-{i}") for i in range(workers)]
        for log in logs:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.touch()
        running = {task.remote(argv, i, max(1, int(self.cpus)), str(log)): i for i, log in enumerate(logs)}
        seen, lost = [log.stat().st_size for log in logs], []
        try:
            while running:
                done, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
                _pass_on(logs, seen)
                for ref in done:
                    i = running.pop(ref)
                    try:
                        r = ray.get(ref)
                    except ray.exceptions.RayError as e:  # its node died, Ray's retries spent
                        lost.append(f"worker {i}: a lost node ({type(e).__name__})")
                        continue
                    if r["code"] != 0:
                        lost.append(f"worker {i} on node {r['node'][:8]} ({r['host']}): exit {r['code']}, see {logs[i]}")
            _pass_on(logs, seen)
        except KeyboardInterrupt:
            _stop(ray, running)
            raise
        return lost


def _pass_on(logs: list[Path], seen: list[int]) -> None:
    """The trial lines the workers wrote since last time (their other lines stay in their logs)."""
    for i, log in enumerate(logs):
        with open(log, "rb") as f:
            f.seek(seen[i])
            text = f.read()
        complete = text[:text.rfind(b"\n") + 1]  # a line still being written waits for next time
        seen[i] += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            if line.startswith(("[trial", "tune:")):
                print(f"[worker {i}] {line}", flush=True)


def _reachable(address: str, seconds: float = 5.0) -> None:
    """A HOST:PORT that nothing answers on is said at once (other forms, e.g. ray://, go to Ray as given)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as e:
        raise UserError(f"no Ray cluster at {address} ({e.strerror or type(e).__name__}); start one with "
                        "`ray start --head` or give its address.") from None


def _ready(cfg: Config, waiting: set[str]) -> bool:
    """A run can start once the initial weights it takes exist, or once the run that makes them has
    ended without them (then it is reported as not started, as locally)."""
    if not cfg.init_from or checkpoints.has_weights(cfg.init_from):
        return True
    source = Path(cfg.init_from).parent.parent.name  # <folder>/runs/SOURCE/checkpoints/init
    return source not in waiting


def _result(ray, ref) -> tuple[str, str]:
    """(outcome, where it ran or why it did not) of a finished task."""
    try:
        r = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return "interrupted", "a cancelled task"
    except ray.exceptions.RayError as e:  # its node or worker died, Ray's retries spent: the run is resumable
        return "failed", f"a lost node ({type(e).__name__}; its checkpoint stands: run the same command again)"
    if r["outcome"] == "refused":
        return "refused", r["error"]
    return r["outcome"], f"node {r['node'][:8]} ({r['host']})"


def _stop(ray, running: dict, runs: list[Path] = ()) -> None:
    """Stop the running tasks, and wait while each run stops at a step with a checkpoint. Ray's
    gentle cancel reaches a task only between Python steps of its own, which a task waiting on its
    `clsf train` does not take in time (bench/results/observations.md, O9), so the task's
    worker is ended instead, as a lost node's would be: each `clsf train` gets SIGINT as its parent
    dies (runner._die_with_parent) and stops with a checkpoint, releasing its run's lock."""
    for ref in running:
        ray.cancel(ref, force=True)
    if running:
        ray.wait(list(running), num_returns=len(running), timeout=60)
    for run in runs:
        runner.wait_unlocked(run)
