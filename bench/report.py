"""Benchmark: how long `clsf report` takes over many runs (target: 50 runs in under 5 s).

    python bench/report.py [--runs 50] [--repeat 5] [--out bench/results/report.md]

The runs are written with clsf's own run-directory writers (config.yaml, env.json, metrics.csv,
final.json, predictions.npz with 10,000 test logits and 48 mistake images: what a CIFAR-10 run
leaves), so only the report is timed, not training. Each repeat runs in a fresh process, as the
command does, and its time includes importing clsf.report and matplotlib.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

import numpy as np


def write_runs(root: Path, n: int, epochs: int = 5, classes: int = 10, test: int = 10_000) -> list[Path]:
    from clsf.config import Config
    from clsf.run import rundir
    from clsf.run.environment import environment

    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(classes)]
    runs = []
    for i in range(n):
        cfg = Config(engine=("keras", "tf", "torch")[i % 3], seed=i // 3, batch_size=(16, 32, 64)[i % 3],
                     run_name=f"run{i:03d}", runs_dir=str(root))
        run = rundir.RunDir.create(str(root), cfg.model.name, cfg.engine, cfg.data.name, cfg.run_name)
        run.write_config(cfg)
        run.write_env(environment("torch", "cpu") | {"data": {"class_names": names}})
        acc = 0.4 + 0.25 * (1 - np.exp(-np.arange(1, epochs + 1) / 2)) + rng.normal(0, 0.01, epochs)
        run.write_metrics([{"epoch": e + 1, "train_loss": 2 - acc[e], "train_acc": acc[e] + 0.02,
                                    "val_loss": 2.1 - acc[e], "val_acc": acc[e], "lr": 1e-3, "seconds": 60.0,
                                    "images_per_s": 700.0, "peak_mem_mb": 900.0} for e in range(epochs)])
        y = rng.integers(0, classes, test)
        logits = rng.normal(0, 1, (test, classes)).astype(np.float32)
        logits[np.arange(test), y] += 2.0
        pred = logits.argmax(1)
        cm = np.zeros((classes, classes), np.int64)
        np.add.at(cm, (y, pred), 1)
        run.write_final({"checkpoint": "last", "epochs": epochs, "test_loss": 1.0,
                                               "test_acc": float((pred == y).mean()), "test_images": test,
                                               "per_class_acc": {c: float(cm[k, k] / cm[k].sum()) for k, c in enumerate(names)},
                                               "confusion": cm.tolist(), "class_names": names})
        wrong = np.flatnonzero(pred != y)[:48]
        run.save_predictions(logits=logits, labels=y, mistake_index=wrong,
                             mistake_images=rng.integers(0, 256, (len(wrong), 32, 32, 3), dtype=np.uint8))
        runs.append(run.path)
    return runs


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clsf", "report", *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="bench/results/report.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        runs = write_runs(root, args.runs)
        many = [timed([str(root), "--out", str(Path(tmp) / "many")]) for _ in range(args.repeat)]
        one = [timed([str(runs[0]), "--out", str(Path(tmp) / "one")]) for _ in range(args.repeat)]
        size = (Path(tmp) / "many" / "report.html").stat().st_size
    stats = lambda t: f"{min(t):.2f} | {statistics.median(t):.2f} | {max(t):.2f}"  # noqa: E731
    lines = ["# clsf report: time to write report.html + report.md", "",
             f"Machine: {machine()}. "
             f"Measured {time.strftime('%Y-%m-%d')}, {args.repeat} repeats, each a fresh `clsf report` process "
             f"(imports included).", "",
             "| report | min s | median s | max s | target |", "| --- | --- | --- | --- | --- |",
             f"| {args.runs} runs (table, differing keys, overlaid curves; {size / 1e3:.0f} kB HTML) | {stats(many)} | "
             f"< 5 s: {'met' if max(many) < 5 else 'MISSED'} |",
             f"| 1 run (curves, metrics, confusion, per-class, 24 mistakes, config, environment) | {stats(one)} | - |"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
