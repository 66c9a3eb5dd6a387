"""Benchmark: one process against two on this machine, for the torch (DDP) and tf
(MultiWorkerMirroredStrategy) engines, at the same effective batch.

    python bench/distributed.py --data ../shared/data/cifar10-jpeg.tar.gz [--images 10000] [--epochs 2]

Each configuration is a whole `clsf train` process (or `--nproc 2`): seed-cnn, the seeds' RMSprop,
effective batch 64 (1 x 64, or 2 x 32), `--epochs` epochs over `--images` training images, 5,000
validation images. Two processes share the machine's cores (each gets OMP_NUM_THREADS=cores / 2), so on a
2-core machine this measures the cost of the machinery (the all-reduce per step, the second
process), not a speed-up. The configurations alternate, `--repeats` times; median (min-max).
Writes bench/results/distributed.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(data: str, engine: str, nproc: int, images: int, epochs: int, runs: str, name: str) -> dict:
    batch = 64 // nproc
    cmd = [sys.executable, "-m", "clsf", "train", "--engine", engine, "--data", data, "--epochs", str(epochs),
           "--batch-size", str(batch), "--runs-dir", runs, "--run-name", name, "--quiet",
           *(["--nproc", str(nproc)] if nproc > 1 else []), f"data.train_subset={images}", "data.val_split=0.1"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    rows = list(csv.DictReader(open(Path(runs) / name / "metrics.csv")))
    final = json.loads((Path(runs) / name / "final.json").read_text())
    return {"images_per_s": float(rows[-1]["images_per_s"]), "epoch_s": float(rows[-1]["seconds"]), "process_s": seconds,
            "val_acc": float(rows[-1]["val_acc"]), "test_acc": final["test_acc"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--engines", default="torch,tf")
    ap.add_argument("--out", default=str(HERE / "results" / "distributed.md"))
    args = ap.parse_args()
    configs = [(e, n) for e in args.engines.split(",") for n in (1, 2)]
    results: dict = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as runs:
        subprocess.run([sys.executable, "-m", "clsf", "data", "info", "--data", args.data], capture_output=True)  # fill the cache
        for rep in range(args.repeats):
            for engine, n in configs:
                res = run(args.data, engine, n, args.images, args.epochs, runs, f"{engine}-{n}-{rep}")
                print(engine, n, res, flush=True)
                results[engine, n].append(res)

    def med(engine, n, key):
        v = [r[key] for r in results[engine, n]]
        return statistics.median(v), min(v), max(v)

    lines = [f"# One process against two ({os.cpu_count()} cores)", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M')} by `python bench/distributed.py --images {args.images} --epochs {args.epochs} "
             f"--repeats {args.repeats}`: seed-cnn, RMSprop, effective batch 64, {args.images:,} CIFAR training images; "
             "images/s of the last epoch; median (min-max) over the repeats, configurations alternating.", "",
             "| engine | processes x batch | train images/s | vs 1 process | last epoch s | whole command s | val acc | test acc |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for engine, n in configs:
        ips = med(engine, n, "images_per_s")
        base = med(engine, 1, "images_per_s")[0]
        ep, ps = med(engine, n, "epoch_s"), med(engine, n, "process_s")
        lines.append(f"| {engine} | {n} x {64 // n} | {ips[0]:,.0f} ({ips[1]:,.0f}-{ips[2]:,.0f}) | {ips[0] / base:.2f} | "
                     f"{ep[0]:.1f} | {ps[0]:.1f} ({ps[1]:.1f}-{ps[2]:.1f}) | {med(engine, n, 'val_acc')[0]:.4f} | "
                     f"{med(engine, n, 'test_acc')[0]:.4f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps({f"{e}-{n}": v for (e, n), v in results.items()}, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
