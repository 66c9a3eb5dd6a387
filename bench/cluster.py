"""Benchmark: what `--executor ray` costs and gains on this machine -- the same compare run here (one
run after another, each with every core's threads) and as tasks on a Ray cluster of two nodes on
this machine (one CPU each: two runs at once, one thread each).

    python bench/cluster.py [--seeds 0,1,2,3] [--epochs 3] [--repeats 2] [--data synthetic:...]

Each timing is the whole `clsf compare` command (start-up, every run, the report), local and Ray
alternating; the cluster is started once, before the first repeat, and its start-up timed on its
own. On 2 cores two 1-thread runs at once do about the work of one 2-thread run: this shows the
overhead, not a speed-up. Writes bench/results/cluster.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, cpu_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_start(*args) -> int:
    """`ray start` in a session of its own (its daemons inherit it: how they are stopped again)."""
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    p = subprocess.Popen([ray, "start", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    out, _ = p.communicate(timeout=300)
    if p.returncode:
        sys.exit(out)
    return p.pid


def kill_session(sid: int) -> None:
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                os.kill(int(d.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


def timed(cmd: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "clsf", *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode:
        sys.exit(r.stdout + r.stderr)
    out = Path(cmd[cmd.index("--out") + 1])
    runs = [json.loads((r / "final.json").read_text()) for r in sorted((out / "runs").iterdir())]
    return seconds, {"test_acc": [f["test_acc"] for f in runs]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--epochs", default="3")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data", default="synthetic:train=4000,test=500,size=32x32x3,classes=10")
    p.add_argument("--out", default=str(HERE / "results" / "cluster.md"))
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="clsfray", dir="/tmp"))
    port = free_port()
    t0 = time.perf_counter()
    sessions = [ray_start("--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard", "false",
                          "--temp-dir", str(tmp), "--disable-usage-stats")]
    sessions.append(ray_start("--address", f"127.0.0.1:{port}", "--num-cpus", "1"))
    cluster_s = time.perf_counter() - t0
    base = ["compare", "--engines", "torch", "--seeds", args.seeds, "--data", args.data, "--epochs", args.epochs, "--quiet"]
    kinds = {"local (one run at a time, 2 threads each)": [],
             "ray, 2 nodes x 1 CPU (two runs at once, 1 thread each)": ["--executor", "ray", "--ray-address",
                                                                        f"127.0.0.1:{port}", "--cpus-per-run", "1"]}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    accs: dict[str, list] = {}
    try:
        for rep in range(args.repeats):
            for kind, extra in kinds.items():
                seconds, result = timed([*base, "--out", str(tmp / f"{len(times[kind])}-{hash(kind)}"), *extra])
                times[kind].append(seconds)
                accs[kind] = result["test_acc"]
                print(f"repeat {rep + 1}: {kind}: {seconds:.1f} s", flush=True)
    finally:
        for sid in reversed(sessions):
            kill_session(sid)
        shutil.rmtree(tmp, ignore_errors=True)

    first = statistics.median(next(iter(times.values())))
    runs = len(args.seeds.split(","))
    lines = [f"# --executor ray against the local executor ({time.strftime('%Y-%m-%d')})", "",
             f"`python bench/cluster.py --seeds {args.seeds} --epochs {args.epochs} --repeats {args.repeats} --data "
             f"{args.data}`: `clsf compare --engines torch` over {runs} seeds, the whole command timed, local and Ray "
             f"alternating. CPU: {cpu_model()} ({os.cpu_count()} cores). The Ray cluster (a head and a second node on "
             f"this machine, 1 CPU each) took {cluster_s:.1f} s to start, not counted below.", "",
             "| executor | whole command s (median, min-max) | vs local | test accuracy per seed |",
             "| --- | --- | --- | --- |"]
    for kind, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"| {kind} | {med:.1f} ({min(ts):.1f}-{max(ts):.1f}) | {med / first:.2f} | "
                     f"{', '.join(f'{a:.4f}' for a in accs[kind])} |")
    lines += ["", "On 2 cores this is not a second machine's gain: what 'vs local' shows is Ray's cost (placing each "
              "run, a worker process per task) against two things that run side by side -- each run's start-up "
              "(importing torch, loading the data) and two 1-thread runs of a small network, which use 2 cores "
              "better than one 2-thread run. The cluster's start is paid once. The tests compare both executors "
              "at one thread a run: the same numbers."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
