"""Benchmark: eager vs graph vs XLA (tf engine) and eager vs torch.compile (torch engine).

    python bench/modes.py --mnist ../shared/data/mnist.npz --cifar ../shared/data/cifar10-jpeg.tar.gz

`mnist-mlp` on MNIST (48,000 training images) and `seed-cnn` on 10,000 CIFAR-10 training images,
3 epochs each, every configuration its own process, all in one run of this script so the numbers
compare. Epoch 1 includes tracing/compiling, so it is reported apart: its extra seconds over a
steady epoch are the compile cost; the steady rate is the median images/s of epochs 2-3.
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

CONFIGS = [("tf", "tf.mode=eager"), ("tf", "tf.mode=graph"), ("tf", "tf.mode=xla"),
           ("torch", "torch.compile=false"), ("torch", "torch.compile=true")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--cifar", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="bench/results/modes.md")
    args = ap.parse_args()
    cases = [("mnist-mlp", args.mnist, []), ("seed-cnn", args.cifar, ["data.train_subset=10000"])]
    lines = [f"# Eager, graph, XLA and torch.compile ({args.epochs} epochs each)", "",
             f"Machine: {machine()}. Measured "
             f"{time.strftime('%Y-%m-%d')}, every configuration its own process, in one run.", "",
             "| model (training images) | engine | mode | epoch 1 seconds | steady seconds/epoch | compile cost (s) | steady images/s | vs the engine's default | final train_loss |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for model, data, extra in cases:
            results = []
            for engine, mode in CONFIGS:
                name = f"{model}-{engine}-{mode.replace('=', '-')}"
                cmd = [sys.executable, "-m", "clsf", "train", "--engine", engine, "--model", model, "--data", data,
                       "--epochs", str(args.epochs), "--runs-dir", tmp, "--run-name", name, "--quiet", mode, *extra]
                print("$", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True, capture_output=True)
                rows = list(csv.DictReader(open(Path(tmp) / name / "metrics.csv")))
                first = float(rows[0]["seconds"])
                results.append({"engine": engine, "mode": mode, "first": first, "images": round(float(rows[0]["images_per_s"]) * first),
                                "steady": statistics.median(float(r["seconds"]) for r in rows[1:]),
                                "ips": statistics.median(float(r["images_per_s"]) for r in rows[1:]),
                                "loss": float(rows[-1]["train_loss"])})
            # each engine against its default path: tf graph, torch without compile
            ref = {r["engine"]: r["ips"] for r in results if r["mode"] in ("tf.mode=graph", "torch.compile=false")}
            for r in results:
                lines.append(f"| {model} ({r['images']:,}) | {r['engine']} | {r['mode']} | {r['first']:.1f} | {r['steady']:.2f} | "
                             f"{max(r['first'] - r['steady'], 0):.1f} | {r['ips']:.0f} | {r['ips'] / ref[r['engine']]:.2f}x | {r['loss']:.4f} |")
                print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
