"""Benchmark: export real runs to every format, then predict a folder of test images with each export.

    python bench/export.py --runs RUN [RUN ...] --images cifar10-jpeg/test [--out bench/results/export.md]

For each run and format, `clsf export` (its own process) writes and verifies the export; then
`clsf predict EXPORT IMAGES --format csv --top-k 1` (again its own process) classifies every image
of the folder, streaming in batches, and its accuracy is computed from the folder names
(<images>/<class>/<file>). The same is done with the run itself (its checkpoint), so each row says
whether the exported model, fed the raw image files, scores what the run scored.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

FORMATS = ("onnx", "torchscript", "savedmodel", "keras")


def clsf(*args: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "clsf", *args], check=True, capture_output=True, text=True)
    return r.stdout, time.perf_counter() - t0


def accuracy(csv_text: str) -> tuple[float, int]:
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    return sum(Path(r["path"]).parent.name == r["class1"] for r in rows) / len(rows), len(rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--images", required=True, help="a folder <class>/<image> (e.g. cifar10-jpeg/test)")
    ap.add_argument("--out", default="bench/results/export.md")
    args = ap.parse_args()
    lines = [f"# clsf export and predict on {args.images}", "",
             f"Machine: {machine()}. Measured "
             f"{time.strftime('%Y-%m-%d')}; every command its own process (so seconds include importing the runtime).", "",
             "| run (trained with) | predicted with | export seconds | max abs diff at export | predict seconds | images/s | accuracy on the image files | run's test_acc |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for run in map(Path, args.runs):
            final = json.loads((run / "final.json").read_text())
            engine = json.loads((run / "env.json").read_text())["engine"]
            out, secs = clsf("predict", str(run), args.images, "--format", "csv", "--top-k", "1", "--checkpoint", "last")
            acc, n = accuracy(out)
            lines.append(f"| {run.name} ({engine}) | the run's checkpoint | - | - | {secs:.1f} | {n / secs:.0f} | {acc:.4f} | {final['test_acc']:.4f} |")
            print(lines[-1], flush=True)
            for fmt in FORMATS:
                folder = Path(tmp) / f"{run.name}-{fmt}"
                _, export_s = clsf("export", str(run), "--format", fmt, "--out", str(folder))
                info = json.loads((folder / "clsf.json").read_text())
                out, secs = clsf("predict", str(folder), args.images, "--format", "csv", "--top-k", "1")
                acc, n = accuracy(out)
                lines.append(f"| {run.name} ({engine}) | {fmt} ({info['verified']['runtime']}) | {export_s:.1f} | "
                             f"{info['verified']['max_abs_diff']:.1e} | {secs:.1f} | {n / secs:.0f} | {acc:.4f} | {final['test_acc']:.4f} |")
                print(lines[-1], flush=True)
                shutil.rmtree(folder)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
