"""`clsf train --nproc N [--nodes H0:P0,H1:P1,... --node-rank I]`: the same command in N processes
on this machine, which is node I of several when --nodes names them.

torch: through torchrun's own launcher (torch.distributed.launcher, what `torchrun --standalone`
runs; with --nodes, what `torchrun --nnodes K --node-rank I --master-addr H0 --master-port P0`
runs: the static rendezvous, node 0 hosting its store), so each process finds RANK, WORLD_SIZE and
the rendezvous as under torchrun. tf: N processes with TF_CONFIG naming every node's workers
(node i's at Hi:Pi, Pi+1, ...; MultiWorkerMirroredStrategy's cluster spec). When one process fails,
this node's others are stopped and the command exits with a line saying which process failed and
how (a process on another node shows up as a lost peer); the run resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from clsf.distributed.cores import thread_env, threads_each
from clsf.errors import ClsfError, PeerLost, UserError


LAUNCH_FLAGS = ("--nproc", "--nodes", "--node-rank", "--outcome")  # the launcher's own: not passed on to the processes


def strip_launch_flags(argv: list[str]) -> list[str]:
    """The command line without --nproc N, --nodes LIST, --node-rank I, --outcome FILE (or their --flag=value forms)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in LAUNCH_FLAGS:
            skip = True
        elif not a.startswith(tuple(f + "=" for f in LAUNCH_FLAGS)):
            out.append(a)
    return out


@dataclass(frozen=True)
class Nodes:
    """The machines of one run, in rank order (node 0 leads: torch's rendezvous store, tf's chief),
    and which of them this is."""

    addresses: tuple[tuple[str, int], ...]
    rank: int

    @classmethod
    def parse(cls, text: str | None, rank: int | None) -> "Nodes | None":
        if text is None and rank is None:
            return None
        if text is None or rank is None:
            raise UserError("--nodes and --node-rank go together: --nodes HOST0:PORT,HOST1:PORT names every machine "
                            "(the same list on each) and --node-rank I says which one this is.")
        addresses = []
        for item in text.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise UserError(f"--nodes entry {item.strip()!r} is not HOST:PORT (a port from 1 to 65535); "
                                "give every machine as HOST:PORT, separated by commas.")
            addresses.append((host.strip("[]"), int(port)))
        if len(set(addresses)) < len(addresses):
            raise UserError(f"--nodes {text} names an address twice; each machine needs its own HOST:PORT.")
        if not 0 <= rank < len(addresses):
            raise UserError(f"--node-rank {rank} is not one of the {len(addresses)} nodes --nodes names; "
                            f"use 0 to {len(addresses) - 1} (0 on the first machine listed).")
        return cls(tuple(addresses), rank)

    def __len__(self) -> int:
        return len(self.addresses)


def _thread_env(nproc: int) -> dict:
    # N processes on a machine's cores: each its share of OpenMP's threads (clsf.distributed.cores);
    # TensorFlow's pools stay as they were (only OpenMP's were measured to clash here)
    return thread_env(threads_each(nproc), tf_pools=False)


def _failed(rank: int, total: int, code: int, nodes: Nodes | None = None) -> ClsfError:
    if code == PeerLost.exit_code and nodes:  # it lost a process on another machine and said so: nothing to add
        e = ClsfError("")
        e.exit_code = code
        return e
    if code in (2, 3, 5, 6):  # the process said why (bad input, non-finite loss, full disk, a lost peer): pass its code on
        e = ClsfError(f"process {rank} of {total} stopped with exit code {code} (its message is above)")
        e.exit_code = code
        return e
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    others = "this machine's other processes were stopped" if nodes else "the others were stopped"
    return PeerLost(f"process {rank} of {total} {how} and {others}")


def run_torch(argv: list[str], nproc: int, nodes: Nodes | None = None, timeout_s: float = 300) -> None:
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the agent's notices; failures come below
    os.environ.update(_thread_env(nproc))
    if nodes:  # torchrun --nnodes K --node-rank I --master-addr H0 --master-port P0: ranks follow the node order
        host, port = nodes.addresses[0]
        config = LaunchConfig(min_nodes=len(nodes), max_nodes=len(nodes), nproc_per_node=nproc, run_id="clsf",
                              rdzv_backend="static", rdzv_endpoint=f"{host}:{port}",
                              rdzv_configs={"rank": nodes.rank, "timeout": int(timeout_s)}, max_restarts=0, monitor_interval=0.2)
    else:
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                              rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2)
    try:
        elastic_launch(config, sys.executable)("-m", "clsf", *argv)
    except ChildFailedError as e:
        # the cause: the first to fail other than as a consequence. Exit 6 (a lost peer) follows from
        # another's failure, and SIGTERM is what the agent sends the survivors; the timestamps are whole
        # seconds, so a survivor can tie with the killed process (bench/results/observations.md, O4)
        def consequence(failure) -> tuple:
            return failure.exitcode == PeerLost.exit_code, failure.exitcode == -signal.SIGTERM, failure.timestamp
        rank, failure = min(e.failures.items(), key=lambda kv: consequence(kv[1]))
        raise _failed(rank, nproc * (len(nodes) if nodes else 1), failure.exitcode, nodes) from None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_tf(argv: list[str], nproc: int, timeout_s: float, nodes: Nodes | None = None) -> None:
    if nodes:  # node i's processes listen on Hi:Pi, Pi+1, ...; worker 0 (node 0's first) is the chief
        workers = [f"{h}:{p + j}" for h, p in nodes.addresses for j in range(nproc)]
        first = nodes.rank * nproc
    else:
        workers, first = [f"127.0.0.1:{p}" for p in _free_ports(nproc)], 0
    procs = []
    for i in range(first, first + nproc):
        env = {"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ, **_thread_env(nproc),  # a lost worker: clsf's line, not TF's C++ log
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen([sys.executable, "-m", "clsf", *argv], env=env))
    try:
        while True:  # the first failure stops the rest (as torchrun's agent does)
            codes = [p.poll() for p in procs]
            bad = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=timeout_s)
                    except subprocess.TimeoutExpired:
                        p.kill()
                rank, code = bad[0]
                raise _failed(first + rank, len(workers), code, nodes)
            if all(c == 0 for c in codes):
                return
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            p.wait()
        raise


def launch(argv: list[str], nproc: int, engine: str, timeout_s: float, nodes: Nodes | None = None) -> None:
    if os.environ.get("WORLD_SIZE") or os.environ.get("TF_CONFIG"):
        raise UserError("--nproc and --nodes launch the processes themselves; under torchrun or with TF_CONFIG set, "
                        "leave them out.")
    from clsf.engines import ENGINES, entry

    how = entry(engine).launcher
    if how is None:
        several = " or ".join(f"--engine {e.name}" for e in ENGINES.values() if e.launcher)
        raise UserError(f"the {engine} engine runs as one process; for several, use {several} "
                        "(the same model and optimizer in a loop that runs distributed).")
    argv = strip_launch_flags(argv)
    if how == "torchrun":
        run_torch(argv, nproc, nodes, timeout_s)
    else:
        run_tf(argv, nproc, timeout_s, nodes)
