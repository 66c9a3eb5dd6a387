"""Benchmark: a pretrained backbone fine-tuned on 1,000 of your own images, against the best recipe
from scratch on the same 1,000 — accuracy and minutes on this machine, per engine.

    python bench/finetune.py --data ../shared/data/cifar10-jpeg.tar.gz [--engines torch,tf,keras] [--seeds 0,1,2]
                             [--size 128] [--scratch fast-seed-cnn:60] [KEY=VALUE ...]

The 1,000 images: 100 per class of CIFAR-10's training split (stratified, seeded: clsf.data.split),
tested on all 10,000 test images, written once as an .npz at 32 px (so every run reads the same
images). `--recipe finetune` (EfficientNet-Lite0 from its ImageNet weights) runs at --size px
(clsf resizes on load), the scratch recipe at 32 px with RECIPE:EPOCHS. Each run is a whole
`clsf train` process; training minutes are the sum of its epochs' seconds (metrics.csv), the whole
process also counts loading, resizing and testing 10,000 images. Engines interleaved seed by seed.
KEY=VALUE: overrides every fine-tuning run takes. Writes bench/results/finetune.md and
docs/finetune.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import HERE, clsf_run, cpu_model  # (whole processes timed as every bench table times them)


def subset(data: str, per_class: int, out: Path) -> Path:
    """CIFAR-10's training split cut to `per_class` images a class (stratified, seed 0) and its whole
    test split, as an .npz of uint8 32 px images."""
    from clsf.data import load_dataset
    from clsf.data.split import stratified_indices

    ds = load_dataset(data)
    train, test = ds["train"], ds["test"]
    _, keep = stratified_indices(train.y, per_class * ds.num_classes / len(train), 0)
    path = out / f"cifar10-{per_class * ds.num_classes}.npz"
    np.savez(path, x_train=train.x[keep], y_train=train.y[keep], x_test=test.x, y_test=test.y)
    counts = np.bincount(train.y[keep], minlength=ds.num_classes)
    print(f"{path}: {len(keep)} training images ({counts.min()}-{counts.max()} a class), {len(test)} test", flush=True)
    return path


def table(args, runs: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["label"], r["engine"]), []).append(r)
    shown = "".join(f" {shlex.quote(o)}" for o in args.overrides)
    lines = [f"# Fine-tuning on 1,000 images ({time.strftime('%Y-%m-%d')})", "",
             f"CIFAR-10, {args.per_class} training images a class (stratified, seed 0), tested on all 10,000 test images; "
             f"`--recipe finetune{shown}` at {args.size} px (EfficientNet-Lite0 from its ImageNet weights) against "
             f"`--recipe {args.scratch[0]} --epochs {args.scratch[1]}` from scratch at 32 px, seeds "
             f"{', '.join(map(str, args.seed_list))}, each a whole `clsf train` process, engines interleaved seed by seed. "
             f"CPU: {cpu_model()} ({os.cpu_count()} cores); precision as the recipe resolved it "
             f"({', '.join(sorted({r['precision'] for r in runs}))}).", "",
             "| recipe | engine | test accuracy (mean ± std) | per seed | training minutes (median, min-max) | whole process minutes (median) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for (label, engine), rs in groups.items():
        acc = [r["test_acc"] for r in rs]
        train = [r["train_seconds"] / 60 for r in rs]
        std = f" ± {statistics.stdev(acc):.4f}" if len(acc) > 1 else " (one seed)"
        lines.append(f"| {label} | {engine} | {statistics.mean(acc):.4f}{std} | {', '.join(f'{a:.4f}' for a in acc)} | "
                     f"{statistics.median(train):.1f} ({min(train):.1f}-{max(train):.1f}) | "
                     f"{statistics.median(r['seconds'] / 60 for r in rs):.1f} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    markers = {"torch": "o", "tf": "s", "keras": "^", "keras-jax": "D", "keras-torch": "v"}
    colors = {}
    for r in runs:
        color = colors.setdefault(r["label"], f"C{len(colors)}")
        ax.plot(r["train_seconds"] / 60, r["test_acc"], markers.get(r["engine"], "o"), color=color, alpha=0.8)
    for label, color in colors.items():
        ax.plot([], [], "o", color=color, label=label)
    for engine in dict.fromkeys(r["engine"] for r in runs):
        ax.plot([], [], markers.get(engine, "o"), color="#555", label=engine)
    ax.set_xlabel("training minutes (2 cores)")
    ax.set_ylabel("test accuracy (10,000 images)")
    ax.set_title("1,000 CIFAR-10 images: fine-tuned vs from scratch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="CIFAR-10 (e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--engines", default="torch,tf,keras")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--size", type=int, default=128, help="the fine-tuning runs' image side in pixels")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--scratch", default="fast-seed-cnn:60", help="RECIPE:EPOCHS from scratch at 32 px ('' to leave out)")
    p.add_argument("--out", default=str(HERE / "results" / "finetune.md"))
    p.add_argument("--plot", default=str(HERE.parent / "docs" / "finetune.png"))
    p.add_argument("overrides", nargs="*", help="KEY=VALUE for every fine-tuning run")
    args = p.parse_args()
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.scratch = tuple(args.scratch.split(":")) if args.scratch else ("", "0")
    root = Path(tempfile.mkdtemp(prefix="clsf-finetune-"))
    data = str(subset(args.data, args.per_class, root))
    runs = []
    for seed in args.seed_list:
        for engine in args.engines.split(","):
            jobs = [("finetune", f"--recipe finetune at {args.size} px", ["--image-size", f"{args.size}x{args.size}",
                                                                          *args.overrides])]
            if args.scratch[0]:
                jobs.append((args.scratch[0], f"--recipe {args.scratch[0]} from scratch", []))
            for recipe, label, extra in jobs:
                epochs = int(args.scratch[1]) if recipe == args.scratch[0] else None
                name = f"{recipe}-{engine}-s{seed}"
                r = clsf_run(root, name, recipe, engine, data, epochs or _recipe_epochs(recipe), "--seed", str(seed), *extra)
                runs.append({**r, "label": label, "engine": engine, "seed": seed})
                print(f"  {name}: test_acc {r['test_acc']:.4f}, training {r['train_seconds'] / 60:.1f} min, whole "
                      f"{r['seconds'] / 60:.1f} min", flush=True)
                Path(args.out).write_text(table(args, runs))  # after every run: a cut-short run keeps its table
                (root / "runs.json").write_text(json.dumps(runs, indent=1))
    plot(runs, Path(args.plot))
    print(Path(args.out).read_text())
    return 0


def _recipe_epochs(recipe: str) -> int:
    import yaml

    from clsf.recipes import recipe_path

    return int(yaml.safe_load(recipe_path(recipe).read_text()).get("epochs", 5))


if __name__ == "__main__":
    sys.exit(main())
