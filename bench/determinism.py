"""Benchmark: what `--deterministic` costs, and that it delivers.

    python bench/determinism.py --data ../shared/data/cifar10-jpeg.tar.gz [--subset 10000] [--epochs 2]

For every engine, `--repeat` runs without the flag and as many with it (each its own process, the
same config otherwise, interleaved so a machine that slows down slows both alike). Reports each
run's training seconds per epoch (mean over its epochs) as min/median/max over the runs, and
whether the runs of each kind wrote byte-identical metrics.csv (timing and memory columns aside)
and test logits.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

import numpy as np

TIMING = ("seconds", "images_per_s", "peak_mem_mb")


def run(tmp: Path, name: str, engine: str, args, deterministic: bool) -> Path:
    cmd = [sys.executable, "-m", "clsf", "train", "--engine", engine, "--data", args.data, "--epochs", str(args.epochs),
           "--runs-dir", str(tmp), "--run-name", name, "--quiet", f"data.train_subset={args.subset}"]
    subprocess.run(cmd + (["--deterministic"] if deterministic else []), check=True, capture_output=True)
    return tmp / name


def same(a: Path, b: Path) -> bool:
    rows = lambda p: [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(open(p / "metrics.csv"))]  # noqa: E731
    with np.load(a / "predictions.npz") as za, np.load(b / "predictions.npz") as zb:
        logits = za["logits"].tobytes() == zb["logits"].tobytes()
    return rows(a) == rows(b) and logits


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="bench/results/determinism.md")
    args = ap.parse_args()
    lines = [f"# --deterministic on {Path(args.data).name} ({args.subset} training images, {args.epochs} epochs, seed-cnn)", "",
             f"Machine: {machine()}. Measured "
             f"{time.strftime('%Y-%m-%d')}; each run its own process, runs interleaved.", "",
             "| engine | s/epoch default (min / median / max) | s/epoch --deterministic (min / median / max) | median ratio | reruns identical (default) | reruns identical (--deterministic) |",
             "| --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ("keras", "tf", "torch"):
            runs = {False: [], True: []}
            for i in range(args.repeat):
                for det in (False, True):
                    runs[det].append(run(Path(tmp), f"{engine}-{int(det)}-{i}", engine, args, det))
            secs = {d: [statistics.mean(float(r["seconds"]) for r in csv.DictReader(open(p / "metrics.csv"))) for p in runs[d]]
                    for d in runs}
            mmm = {d: f"{min(v):.2f} / {statistics.median(v):.2f} / {max(v):.2f}" for d, v in secs.items()}
            ident = {d: all(same(runs[d][0], other) for other in runs[d][1:]) for d in runs}
            lines.append(f"| {engine} | {mmm[False]} | {mmm[True]} | {statistics.median(secs[True]) / statistics.median(secs[False]):.2f} | "
                         f"{'yes' if ident[False] else 'no'} | {'yes' if ident[True] else 'no'} |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
