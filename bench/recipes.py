"""Benchmark: time to accuracy. The fast recipes against the user's documents' own recipe, with a
time budget measured on this machine in this run.

    python bench/recipes.py --data ../shared/data/cifar10-jpeg.tar.gz [--multiples 1,3,10] [--engine torch]

1. The budget: the documents' 5-epoch Keras script (bench/reference.py's model, RMSprop, batch 32,
   `validation_split=0.2`, `x / 255.0`, then `model.evaluate` on the test split), timed as a whole
   process from start to its test accuracy.
2. `--recipe fast-seed-cnn` with as many epochs as fit in 1 budget, and `--recipe fast-cifar` with as
   many as fit in each multiple of it. Epochs are chosen from a calibration run (two epochs on 5,000
   images: the second epoch's images/s, and the process's fixed cost); every run is then timed as a whole process too,
   and plotted at the seconds it actually took, over or under the budget.
Every process reads the decoded dataset from one cache, filled before any timing. Writes
bench/results/recipes.md and docs/time-to-accuracy.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def seeds_script(data: str) -> None:
    """The documents' recipe, in one process: prints its test accuracy as JSON."""
    import keras

    sys.path.insert(0, str(HERE))
    from reference import keras_model

    from clsf.data import load_dataset

    ds = load_dataset(data)
    x, y, xt, yt = ds["train"].x / 255.0, ds["train"].y, ds["test"].x / 255.0, ds["test"].y
    model = keras_model(softmax=True)
    model.compile(optimizer=keras.optimizers.RMSprop(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=5, validation_split=0.2, verbose=0)
    print(json.dumps({"test_acc": float(model.evaluate(xt, yt, verbose=0)[1])}))


def timed_process(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return seconds, r.stdout


def clsf_run(root: Path, name: str, recipe: str, engine: str, data: str, epochs: int, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "clsf", "train", "--recipe", recipe, "--engine", engine, "--data", data, "--epochs", str(epochs),
           "--runs-dir", str(root), "--run-name", name, "--quiet", *extra]
    print("$", " ".join(cmd[2:]), flush=True)
    seconds, _ = timed_process(cmd)
    rows = list(csv.DictReader(open(root / name / "metrics.csv")))
    final = json.loads((root / name / "final.json").read_text())
    return {"name": name, "recipe": recipe, "epochs": epochs, "seconds": seconds, "test_acc": final["test_acc"],
            "train_seconds": sum(float(r["seconds"]) for r in rows), "images_per_s": float(rows[-1]["images_per_s"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data")
    ap.add_argument("--engine", default="torch")
    ap.add_argument("--multiples", default="1,3,10", help="budgets for fast-cifar, in multiples of the documents' recipe")
    ap.add_argument("--out", default=str(HERE / "results" / "recipes.md"))
    ap.add_argument("--figure", default=str(HERE.parent / "docs" / "time-to-accuracy.png"))
    ap.add_argument("--seeds-script", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seeds_script:
        seeds_script(args.data)
        return 0
    if not args.data:
        ap.error("--data is required")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CLSF_CACHE"] = str(tmp / "cache")
        subprocess.run([sys.executable, "-m", "clsf", "data", "info", "--data", args.data], check=True, capture_output=True)  # fill the cache
        print("the documents' recipe (the budget)", flush=True)
        budget, out = timed_process([sys.executable, __file__, "--seeds-script", "--data", args.data])
        seeds_acc = json.loads(out.strip().splitlines()[-1])["test_acc"]

        def epochs_for(recipe: str, seconds: float) -> tuple[int, dict]:
            # two epochs on 5,000 images: the second one's rate is the steady one (the first pays the set-up)
            cal = clsf_run(tmp / "runs", f"calibrate-{recipe}", recipe, args.engine, args.data, 2, "data.train_subset=5000")
            fixed = cal["seconds"] - cal["train_seconds"]  # start-up, data, evaluation
            per_epoch = 50_000 / cal["images_per_s"]  # the last epoch's images/s
            return max(1, int((seconds - fixed) // per_epoch)), cal

        runs = []
        n, _ = epochs_for("fast-seed-cnn", budget)
        runs.append({**clsf_run(tmp / "runs", "fast-seed-cnn-1x", "fast-seed-cnn", args.engine, args.data, n), "budget": 1})
        for m in [float(v) for v in args.multiples.split(",")]:
            n, _ = epochs_for("fast-cifar", m * budget)
            runs.append({**clsf_run(tmp / "runs", f"fast-cifar-{m:g}x", "fast-cifar", args.engine, args.data, n), "budget": m})

    lines = [f"# Time to accuracy on {Path(args.data).name} ({time.strftime('%Y-%m-%d')}, engine {args.engine})", "",
             f"Budget: the documents' 5-epoch Keras recipe took **{budget:.0f} s** on this machine in this run "
             f"(whole process: start, data from the cache, training, test) and scored **{seeds_acc:.4f}**. Each recipe run "
             "is timed the same way; its epochs were chosen from a two-epoch calibration to fit the budget.", "",
             "| recipe | budget | epochs | seconds (whole process) | of the budget | test accuracy |", "| --- | --- | --- | --- | --- | --- |",
             f"| the documents' Keras script | 1x | 5 | {budget:.0f} | 1.00 | {seeds_acc:.4f} |"]
    for r in runs:
        lines.append(f"| `--recipe {r['recipe']}` | {r['budget']:g}x | {r['epochs']} | {r['seconds']:.0f} | "
                     f"{r['seconds'] / budget:.2f} | {r['test_acc']:.4f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.scatter([budget], [seeds_acc], color="#888", zorder=3, label="the documents' Keras script (5 epochs)")
    fs = [r for r in runs if r["recipe"] == "fast-seed-cnn"]
    ax.scatter([r["seconds"] for r in fs], [r["test_acc"] for r in fs], color="#d62728", zorder=3, label="--recipe fast-seed-cnn")
    fc = [r for r in runs if r["recipe"] == "fast-cifar"]
    ax.plot([r["seconds"] for r in fc], [r["test_acc"] for r in fc], "o-", color="#1f77b4", label="--recipe fast-cifar")
    for m in [1, 3, 10]:
        ax.axvline(m * budget, color="#ccc", lw=0.8, zorder=0)
        ax.text(m * budget, 0.51, f" {m}x budget", color="#999", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"seconds on this machine (log; budget = {budget:.0f} s)")
    ax.set_ylabel("CIFAR-10 test accuracy")
    ax.set_ylim(0.5, 0.95)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
