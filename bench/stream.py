"""Benchmark: streaming an image folder from disk against holding it in memory, at 10k, 50k and
200k images.

    python bench/stream.py --data ../shared/data/cifar10-jpeg.tar.gz [--sizes 10000,50000,200000] [--workers 0,2] [--repeats 2]

The folders are the CIFAR-10 training JPEGs repeated (hard links, so they cost no disk), N images
under train/<class>/ plus 1,000 test images. Each configuration is a whole `clsf train` process:
one epoch of seed-cnn (batch 128) over min(N, 50,000) training images (a seeded subset of the
bigger folder: the epoch's time does not grow with the folder, its data loading might), no
validation split. Measured per process: training images/s (metrics.csv) and the training process's
peak resident memory — the in-memory path decodes the whole folder before training, the streaming
path only what a batch needs (its DataLoader workers are forked from the training process and
share its pages). Writes bench/results/stream.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN_CAP = 50_000  # images per timed epoch


def build_folders(archive: Path, root: Path, sizes: list[int]) -> dict[int, Path]:
    """root/src: the archive's JPEGs once; root/N: N training images (repeated) + 1,000 test images, hard-linked."""
    src = root / "src"
    if not src.is_dir():
        with tarfile.open(archive) as t:
            t.extractall(src, filter="data")
    train = sorted((src).rglob("train/*/*.jpg"))
    test = sorted((src).rglob("test/*/*.jpg"))[::10]  # 1,000 of them, every class
    out = {}
    for n in sizes:
        folder = root / str(n)
        if not folder.is_dir():
            tmp = root / f".{n}"
            shutil.rmtree(tmp, ignore_errors=True)
            for i in range(n):
                p = train[i % len(train)]
                dst = tmp / "train" / p.parent.name / f"{i:06d}.jpg"
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(p, dst)
            for i, p in enumerate(test):
                dst = tmp / "test" / p.parent.name / f"{i:05d}.jpg"
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(p, dst)
            tmp.rename(folder)
        out[n] = folder
    return out


def worker(folder: str, engine: str, stream: bool, runs: str, name: str, workers: int) -> None:
    """One configuration in this process: train, then print the measurements as JSON."""
    from clsf import build_config, train

    n = sum(1 for _ in Path(folder, "train").rglob("*.jpg"))
    overrides = [f"data.name={folder}", f"data.stream={str(stream).lower()}", "data.val_split=0", f"data.workers={workers}"]
    if n > TRAIN_CAP:
        overrides.append(f"data.train_subset={TRAIN_CAP}")
    t0 = time.perf_counter()
    cfg = build_config(flags={"engine": engine, "epochs": 1, "batch_size": 128, "runs_dir": runs, "run_name": name},
                       overrides=overrides)
    run = train(cfg, quiet=True)
    total = time.perf_counter() - t0
    row = next(csv.DictReader(open(run / "metrics.csv")))
    kib = 1024
    print(json.dumps({"images_per_s": float(row["images_per_s"]), "epoch_s": float(row["seconds"]), "process_s": total,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
                      "test_acc": json.loads((run / "final.json").read_text())["test_acc"]}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument("--engine", default="torch", choices=("torch", "tf", "keras"))
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "clsf-bench-stream"))
    ap.add_argument("--out", default=str(HERE / "results" / "stream.md"))
    ap.add_argument("--workers", default="0,2", help="streaming rows for each of these data.workers (torch's DataLoader "
                    "processes; 0: decoded in the training process)")
    ap.add_argument("--repeats", type=int, default=2, help="every configuration this many times, in alternating order")
    ap.add_argument("--worker", nargs=5, metavar=("FOLDER", "ENGINE", "STREAM", "RUNS", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        folder, engine, stream, runs, workers = args.worker
        worker(folder, engine, stream == "true", runs, f"{Path(folder).name}-{stream}-{workers}", int(workers))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    folders = build_folders(Path(args.data), Path(args.root), sizes)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CLSF_CACHE": os.path.join(args.root, "cache")}
    results = []
    with tempfile.TemporaryDirectory() as runs:
        for n in sizes:
            configs = [("false", 0)] + [("true", int(w)) for w in args.workers.split(",")]
            for rep in range(args.repeats):  # alternating order: a drift in the machine's speed hits every path
                for stream, workers in (configs if rep % 2 == 0 else configs[::-1]):
                    cmd = [sys.executable, __file__, "--worker", str(folders[n]), args.engine, stream, runs, str(workers)]
                    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if r.returncode:
                        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
                    res = {"images": n, "stream": stream == "true", "workers": workers, "repeat": rep,
                           **json.loads(r.stdout.strip().splitlines()[-1])}
                    print(res, flush=True)
                    results.append(res)

    def rows_of(n, stream, workers):
        return [r for r in results if (r["images"], r["stream"], r["workers"]) == (n, stream, workers)]

    def span(rows, key, fmt):
        v = sorted(r[key] for r in rows)
        return f"{fmt(statistics.median(v))} ({fmt(v[0])}-{fmt(v[-1])})" if len(v) > 1 else fmt(v[0])

    lines = [f"# Streaming vs in memory ({args.engine}, seed-cnn, batch 128, one epoch over min(N, {TRAIN_CAP:,}) images)", "",
             f"Machine: {os.cpu_count()} cores; measured {time.strftime('%Y-%m-%d %H:%M')} by `python bench/stream.py "
             f"--repeats {args.repeats}`. One process per measurement, the configurations of a size in alternating order; "
             "median (min-max) over the repeats. Ratio: the median of each repeat's streaming images/s over the "
             "in-memory images/s of the same repeat. Peak memory: the training process's resident set (the first "
             "in-memory process of a size also decodes the folder into clsf's cache, the later ones read that cache).", "",
             "| images in folder | path | train images/s | vs in memory | epoch s | whole process s | peak MiB | test acc |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        mem = {r["repeat"]: r["images_per_s"] for r in rows_of(n, False, 0)}
        for stream, workers in [(False, 0)] + [(True, int(w)) for w in args.workers.split(",")]:
            rows = rows_of(n, stream, workers)
            ratio = statistics.median(r["images_per_s"] / mem[r["repeat"]] for r in rows)
            path = f"stream, {workers} workers" if stream else "in memory"
            lines.append(f"| {n:,} | {path} | {span(rows, 'images_per_s', lambda v: f'{v:,.0f}')} | {ratio:.2f} | "
                         f"{span(rows, 'epoch_s', lambda v: f'{v:.1f}')} | {span(rows, 'process_s', lambda v: f'{v:.1f}')} | "
                         f"{span(rows, 'peak_mb', lambda v: f'{v:,.0f}')} | {rows[0]['test_acc']:.4f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
