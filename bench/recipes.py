"""Benchmark: time to accuracy. The fast recipes against the classic Keras CIFAR-10 tutorial's script, with a
time budget measured on this machine around every run.

    python bench/recipes.py --data ../shared/data/cifar10-jpeg.tar.gz [--plan "fast-seed-cnn:1 fast-cifar:1,3,10"] [--engine torch]

1. The budget: the tutorial's 5-epoch Keras script (bench/reference.py's model, RMSprop, batch 32,
   `validation_split=0.2`, `x / 255.0`, then `model.evaluate` on the test split), timed as a whole
   process from start to its test accuracy -- before the first recipe run and after every one, a new
   seed each time, so each run is divided by the mean of the two budget runs around it (these
   machines' speed moves by 2x within an hour: one budget at the start would misprice the rest), and
   the budget runs together are the script's accuracy and its seed-to-seed spread (at least
   --reference-seeds of them). Its data order is CIFAR-10's own, class-mixed, and its split the last
   20% of it; clsf loads the JPEG folders class-mixed too, and the script checks that its last 20%
   holds every class (class-sorted arrays made this baseline score 0.54 instead of the 0.66-0.69 its
   authors printed).
2. Each recipe of --plan (RECIPE:MULTIPLES, e.g. `speedrun:1,3,10`) with as many epochs as fit in each
   multiple of the budget run just before it. Epochs are chosen from a calibration run (two epochs on
   5,000 images: the second epoch's images/s, and the process's fixed cost); every run is then timed as
   a whole process too, and plotted at the multiple of the budget it actually took, over or under.
Every process reads the decoded dataset from one cache, filled before any timing. Writes
bench/results/recipes.md and docs/time-to-accuracy.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, budget_run, clsf_run, cpu_model


TUTORIAL_PRINTED = (0.6645, 0.6900)  # the test accuracies the tutorial's own runs printed for this 5-epoch script


def seeds_script(data: str, seed: int) -> None:
    """The tutorial's script, in one process: prints its test and last validation accuracy as JSON."""
    import keras
    import numpy as np

    from reference import keras_model

    from clsf.data import load_dataset

    keras.utils.set_random_seed(seed)
    ds = load_dataset(data)
    x, y, xt, yt = ds["train"].x / 255.0, ds["train"].y, ds["test"].x / 255.0, ds["test"].y
    val_classes = np.unique(y[len(y) - len(y) // 5:])  # what validation_split=0.2 holds out: the last 20%
    if len(val_classes) != ds.num_classes:
        raise SystemExit(f"the last 20% of the training arrays hold {len(val_classes)} of {ds.num_classes} classes: "
                         "the data is class-sorted, and validation_split would never train on the others")
    model = keras_model(softmax=True)
    model.compile(optimizer=keras.optimizers.RMSprop(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=32, epochs=5, validation_split=0.2, verbose=0)
    print(json.dumps({"test_acc": float(model.evaluate(xt, yt, verbose=0)[1]),
                      "val_acc": float(hist.history["val_accuracy"][-1])}))


def plot(ref_acc: float, ref_std: float, ref_seeds: int, runs: list[dict], out: str) -> None:
    """Test accuracy against whole-process time in multiples of the budget around each run (log), the
    targets marked along the top, the legend where no point is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.errorbar([1.0], [ref_acc], yerr=[ref_std], fmt="o", color="#888", zorder=3,
                label=f"the Keras tutorial's script (5 epochs, {ref_seeds} seeds)")
    colors = {"fast-seed-cnn": "#d62728", "fast-cifar": "#1f77b4", "speedrun": "#2ca02c", "speedrun-muon": "#9467bd"}
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        rs = [r for r in runs if r["recipe"] == recipe]
        ax.plot([r["of_budget"] for r in rs], [r["test_acc"] for r in rs], "o-" if len(rs) > 1 else "o",
                color=colors.get(recipe), label=f"--recipe {recipe}", zorder=3)
    ratios = [1.0] + [r["of_budget"] for r in runs]
    ax.set_xscale("log")
    ax.set_xlim(min(ratios) / 1.3, max(max(ratios), 10) * 1.4)  # room for the last label
    for m in sorted({1, 3, 10} | {r["budget"] for r in runs}):
        ax.axvline(m, color="#ccc", lw=0.8, zorder=0)
        ax.text(m, 0.935, f" {m:g}x budget", color="#888", fontsize=8, va="top")
    ax.set_xlabel("whole-process time in multiples of the budget run around it (log)")
    ax.set_ylabel("CIFAR-10 test accuracy")
    ax.set_ylim(0.5, 0.95)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def replot(table: str, out: str) -> None:
    """The figure again from a results table this script wrote (ratios as the table rounds them)."""
    import re

    text = Path(table).read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ")][2:]
    acc, std = (float(v) for v in re.findall(r"[0-9.]+", rows[0][6])[:2])
    runs = [{"recipe": re.search(r"--recipe ([\w-]+)", r[0]).group(1), "budget": float(r[1].strip(" x")),
             "of_budget": float(r[5]), "test_acc": float(r[6])} for r in rows[1:]]
    plot(acc, std, int(re.search(r"over its (\d+) runs", text).group(1)), runs, out)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value): the tutorial script's accuracy over its budget runs."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(args, budgets: list[dict], runs: list[dict]) -> str:
    """The results so far, as markdown (written after every run, so a run cut short keeps them)."""
    accs = [b["test_acc"] for b in budgets]
    acc, std = mean_std(accs)
    secs = [b["seconds"] for b in budgets]
    lo, hi = TUTORIAL_PRINTED
    verdict = "inside" if lo - 0.01 <= min(accs) and max(accs) <= hi else "OUTSIDE"
    lines = [f"# Time to accuracy on {Path(args.data).name} ({time.strftime('%Y-%m-%d')}, engine {args.engine})", "",
             "The budget: the classic Keras CIFAR-10 tutorial's 5-epoch script as a whole process (start, data from the "
             "cache, training, test), run before the first recipe run and after each, a new seed each time; it took "
             f"**{', '.join(f'{s:.0f}' for s in secs)} s** here in turn ({min(secs):.0f}-{max(secs):.0f}) and scored "
             f"**{acc:.4f} ± {std:.4f}** over its {len(accs)} runs ({', '.join(f'{a:.4f}' for a in accs)}). Its own "
             f"printed runs show {lo:.4f} and {hi:.4f} on the original CIFAR-10; this JPEG copy scores about a point "
             f"under it, so the check is [{lo - 0.01:.4f}, {hi:.4f}]: every seed is **{verdict}** it. Each recipe run "
             "is timed the same way and divided by the mean of the two budget runs around it; its epochs were chosen "
             "from a two-epoch calibration to fit the budget run just before it. "
             f"CPU: {cpu_model()} ({os.cpu_count()} cores); the recipes computed in "
             f"{', '.join(sorted({r['precision'] for r in runs})) or '-'}.", "",
             "| recipe | budget | epochs | seconds (whole process) | budget runs around it (s) | of the budget | test accuracy |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| the Keras tutorial's script | 1x | 5 | {statistics.median(secs):.0f} ({min(secs):.0f}-{max(secs):.0f}) | - | "
             f"1.00 | {acc:.4f} ± {std:.4f} |"]
    for r in runs:
        lines.append(f"| `--recipe {r['recipe']}` | {r['budget']:g}x | {r['epochs']} | {r['seconds']:.0f} | "
                     f"{r['around'][0]:.0f}, {r['around'][1]:.0f} | {r['of_budget']:.2f} | {r['test_acc']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data")
    ap.add_argument("--engine", default="torch")
    ap.add_argument("--plan", default="fast-seed-cnn:1 fast-cifar:1,3,10",
                    help="RECIPE:MULTIPLES ...: the budgets each recipe runs at, in multiples of the tutorial script's time")
    ap.add_argument("--out", default=str(HERE / "results" / "recipes.md"))
    ap.add_argument("--figure", default=str(HERE.parent / "docs" / "time-to-accuracy.png"))
    ap.add_argument("--reference-seeds", type=int, default=3,
                    help="at least this many runs of the tutorial's script (its accuracy's spread); more where the plan has more runs")
    ap.add_argument("--seeds-script", type=int, default=None, help=argparse.SUPPRESS)  # internal: one run, this seed
    ap.add_argument("--replot", metavar="RESULTS_MD", help="only redraw the figure from a table this script wrote")
    args = ap.parse_args()
    if args.replot:
        replot(args.replot, args.figure)
        return 0
    if args.seeds_script is not None:
        seeds_script(args.data, args.seeds_script)
        return 0
    if not args.data:
        ap.error("--data is required")
    try:
        plan = [(r, float(m)) for r, _, ms in (item.partition(":") for item in args.plan.split()) for m in ms.split(",")]
    except ValueError:
        ap.error(f"--plan {args.plan!r}: give RECIPE:MULTIPLES items, e.g. 'fast-cifar:1,3,10 speedrun:3'")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CLSF_CACHE"] = str(tmp / "cache")
        subprocess.run([sys.executable, "-m", "clsf", "data", "info", "--data", args.data], check=True, capture_output=True)  # fill the cache
        budgets: list[dict] = []

        def budget() -> None:  # the tutorial's script, a new seed each run: the budget and its accuracy's spread
            budgets.append(budget_run(args.data, seed=len(budgets)))
            print(f"  {budgets[-1]['seconds']:.0f} s, test {budgets[-1]['test_acc']:.4f}", flush=True)

        for _ in range(max(1, args.reference_seeds - len(plan))):  # with the one after each run: >= --reference-seeds
            budget()
        calibrations: dict[str, dict] = {}

        def epochs_for(recipe: str, seconds: float) -> int:
            # two epochs on 5,000 images: the second one's rate is the steady one (the first pays the set-up)
            if recipe not in calibrations:
                calibrations[recipe] = clsf_run(tmp / "runs", f"calibrate-{recipe}", recipe, args.engine, args.data, 2,
                                                "data.train_subset=5000")
            cal = calibrations[recipe]
            fixed = cal["seconds"] - cal["train_seconds"]  # start-up, data, evaluation
            per_epoch = 50_000 / cal["images_per_s"]  # the last epoch's images/s
            return max(1, int((seconds - fixed) // per_epoch))

        runs = []
        for recipe, m in plan:
            n = epochs_for(recipe, m * budgets[-1]["seconds"])  # the budget just measured
            run = {**clsf_run(tmp / "runs", f"{recipe}-{m:g}x", recipe, args.engine, args.data, n), "budget": m}
            budget()  # after the run: it lies between budgets[-2] and budgets[-1]
            run["around"] = (budgets[-2]["seconds"], budgets[-1]["seconds"])
            run["of_budget"] = run["seconds"] / statistics.mean(run["around"])
            runs.append(run)
            Path(args.out).write_text(table(args, budgets, runs))
    text = table(args, budgets, runs)
    Path(args.out).write_text(text)
    print(text)
    plot(*mean_std([b["test_acc"] for b in budgets]), len(budgets), runs, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
