"""Benchmark: trunk transfer on real data. CIFAR-10's first five classes train a trunk; the other
five classes, with few training images, are learned from scratch, fine-tuned from the trunk, or
with the trunk frozen and only a new head trained — same epochs, same recipe.

    python bench/transfer.py --data ../shared/data/cifar10-jpeg.tar.gz [--subset 5000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import machine

A = ("airplane", "automobile", "bird", "cat", "deer")
B = ("dog", "frog", "horse", "ship", "truck")


def clsf(*args: str) -> None:
    print("$ clsf", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "clsf", *args], check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--subset", type=int, default=5000, help="training images of the new task")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--engine", default="torch")
    ap.add_argument("--out", default="bench/results/transfer.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with tarfile.open(args.data) as tf:
            tf.extractall(tmp / "all", filter="data")
        root = next((tmp / "all").glob("*/train")).parent
        for name, classes in (("a", A), ("b", B)):
            for split in ("train", "test"):
                for c in classes:
                    shutil.copytree(root / split / c, tmp / name / split / c)
        common = ["--engine", args.engine, "--epochs", str(args.epochs), "--runs-dir", str(tmp / "runs"), "--quiet"]
        clsf("train", "--data", str(tmp / "a"), "--run-name", "trunk", *common)
        small = [f"data.train_subset={args.subset}"]
        clsf("train", "--data", str(tmp / "b"), "--run-name", "scratch", *common, *small)
        clsf("train", "--data", str(tmp / "b"), "--run-name", "fine-tuned", "--init-from", str(tmp / "runs" / "trunk"), *common, *small)
        clsf("train", "--data", str(tmp / "b"), "--run-name", "frozen", "--init-from", str(tmp / "runs" / "trunk"),
             "--freeze", "trunk", *common, *small)
        clsf("train", "--data", str(tmp / "b"), "--run-name", "unfrozen", "--init-from", str(tmp / "runs" / "trunk"),
             "--freeze", "trunk", "--unfreeze-after", "1", *common, *small)
        final = {n: json.loads((tmp / "runs" / n / "final.json").read_text())
                 for n in ("trunk", "scratch", "fine-tuned", "frozen", "unfrozen")}
        secs = {n: sum(float(r.split(",")[6]) for r in (tmp / "runs" / n / "metrics.csv").read_text().splitlines()[1:]) for n in final}
    lines = [f"# Trunk transfer on {Path(args.data).name}: classes {', '.join(A)} -> {', '.join(B)}", "",
             f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}; seed-cnn, "
             f"engine {args.engine}, default recipe, {args.epochs} epochs each; the new task trains on {args.subset} images "
             "(a stratified subset of its training split; 20% of the split is held out for validation as always).", "",
             "| run | what it learns from | test acc (5 classes) | train seconds |", "| --- | --- | --- | --- |",
             f"| trunk | the first five classes, all 20,000 training images | {final['trunk']['test_acc']:.4f} | {secs['trunk']:.0f} |",
             f"| scratch | the new classes only | {final['scratch']['test_acc']:.4f} | {secs['scratch']:.0f} |",
             f"| fine-tuned | `--init-from trunk`, every layer trains | {final['fine-tuned']['test_acc']:.4f} | {secs['fine-tuned']:.0f} |",
             f"| frozen | `--init-from trunk --freeze trunk`, the new head only | {final['frozen']['test_acc']:.4f} | {secs['frozen']:.0f} |",
             f"| unfrozen | `--freeze trunk --unfreeze-after 1`: the head alone for 1 epoch, then every layer | "
             f"{final['unfrozen']['test_acc']:.4f} | {secs['unfrozen']:.0f} |"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
