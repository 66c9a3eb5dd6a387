"""Acceptance benchmark: the default recipe on real CIFAR-10 through all three engines.

    python bench/engines.py --data ../shared/data/cifar10-jpeg.tar.gz [--epochs 5] [--out bench/results/cifar10-engines.md]

Each engine trains in its own process (`clsf train`, TF and torch never share one), then the
table (test accuracy, training seconds, images/s, machine) is written from the run directories'
final.json and metrics.csv. Then each run is evaluated by the other framework (`clsf evaluate
RUN --engine E`, again one process each) and compared with the logits saved at training.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--model", default="seed-cnn")
    ap.add_argument("--engines", default="keras,tf,torch")
    ap.add_argument("--runs-dir", default="runs/bench")
    ap.add_argument("--out", default="bench/results/cifar10-engines.md")
    ap.add_argument("extra", nargs="*", help="KEY=VALUE overrides passed to every engine")
    args = ap.parse_args()

    results = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for engine in args.engines.split(","):
        name = f"{stamp}-{args.model}-{engine}"
        cmd = [sys.executable, "-m", "clsf", "train", "--engine", engine, "--model", args.model, "--data", args.data,
               "--epochs", str(args.epochs), "--runs-dir", args.runs_dir, "--run-name", name, "--quiet", *args.extra]
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        run = Path(args.runs_dir) / name
        final = json.loads((run / "final.json").read_text())
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        train_s = sum(float(r["seconds"]) for r in rows)
        ips = sum(float(r["images_per_s"]) for r in rows[1:]) / max(1, len(rows) - 1) if len(rows) > 1 else float(rows[0]["images_per_s"])
        results.append((engine, final["test_acc"], final["test_loss"], float(rows[-1]["val_acc"] or 0), train_s, ips, wall, run))
        print(f"{engine}: test_acc {final['test_acc']:.4f}  train {train_s:.0f}s  {ips:.0f} img/s", flush=True)

    cross = []
    for engine, acc, *_, run in results:
        other = "torch" if engine != "torch" else "keras"
        cmd = [sys.executable, "-m", "clsf", "evaluate", str(run), "--engine", other, "--json"]
        print("$", " ".join(cmd), flush=True)
        rep = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        cross.append((engine, other, acc, rep["test_acc"], rep["agreement"]["same_prediction"], rep["agreement"]["max_abs_logit_diff"]))

    accs = [r[1] for r in results]
    env = json.loads((results[0][7] / "env.json").read_text())
    lines = [
        f"# {args.model} on {Path(args.data).name}, {args.epochs} epochs, default recipe",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}; "
        f"python {platform.python_version()}, tensorflow {env['packages'].get('tensorflow-cpu') or env['packages'].get('tensorflow')}, "
        f"keras {env['packages'].get('keras')}, torch {env['packages'].get('torch')}. Measured {time.strftime('%Y-%m-%d')}.",
        "",
        "| engine | test acc | test loss | last val acc | train seconds | images/s (epochs 2+) | wall seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {e} | {a:.4f} | {l:.4f} | {v:.4f} | {s:.0f} | {i:.0f} | {w:.0f} |" for e, a, l, v, s, i, w, _ in results]
    lines += ["", f"Spread of test accuracy: {100 * (max(accs) - min(accs)):.2f} points.", "",
              "Each run's weights evaluated by the other framework (`clsf evaluate RUN --engine E`):", "",
              "| trained with | evaluated with | test acc (trained) | test acc (evaluated) | same prediction | max abs logit diff |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {e} | {o} | {a:.4f} | {b:.4f} | {100 * p:.2f}% | {d:.1e} |" for e, o, a, b, p, d in cross]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
