"""Benchmark: one recipe at one budget point in several engines — time to accuracy per engine, and
whether the engines reach the same accuracy within the seed-to-seed spread.

    python bench/recipe_engines.py --data ../shared/data/cifar10-jpeg.tar.gz [--recipe speedrun] [--epochs 1]
                                   [--engines torch,tf,keras] [--seeds 0,1,2] [KEY=VALUE ...]

In one run on this machine: `clsf train --recipe R --epochs E` for every engine and seed, each a
whole process timed from start to its test accuracy, engines interleaved seed by seed so a machine
that changes speed during the run touches every engine alike; and the budget — the classic Keras
CIFAR-10 tutorial's 5-epoch script, as bench/recipes.py times it — before the first round of seeds
and after every round, so each recipe run is divided by the mean of the two budget runs around it
(these machines' speed moves by 2x within an hour: one budget at the start would misprice the rest);
where those two differ by more than 20% the table says so, with the run's ratio to either alone.
KEY=VALUE: config overrides every recipe run takes (the recipe at another point of its design, e.g.
a narrower network); the table names them. Writes bench/results/recipe-engines.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, bracket, budget_run, clsf_run, cpu_model, drift_note  # (the same timing as the time-to-accuracy table)


def write_table(args, budgets: list[dict], runs: dict, seeds: list[int]) -> None:
    """The results so far (written after every round of seeds, so a run cut short keeps them). Each run
    carries `budget`: the mean of the budget runs before and after its round."""
    means = {e: statistics.mean(r["test_acc"] for r in rs) for e, rs in runs.items()}
    stds = {e: statistics.stdev([r["test_acc"] for r in rs]) if len(rs) > 1 else 0.0 for e, rs in runs.items()}
    spread = max(means.values()) - min(means.values())
    seed_std = max(stds.values())
    where = "in every engine" if len(runs) > 1 else f"in the {next(iter(runs))} engine"
    refs, took = [b["test_acc"] for b in budgets], ", ".join(f"{b['seconds']:.0f}" for b in budgets)
    shown = "".join(f" {shlex.quote(o)}" for o in args.overrides)  # as a shell takes it
    engines_in = {}  # precision -> the engines that computed in it (`auto` resolves per engine: keras-jax stays fp32)
    for e, rs in runs.items():
        for precision in sorted({r["precision"] for r in rs}):
            engines_in.setdefault(precision, []).append(e)
    computed = (next(iter(engines_in)) if len(engines_in) == 1
                else "; ".join(f"{p} ({', '.join(es)})" for p, es in sorted(engines_in.items())))
    lines = [f"# `--recipe {args.recipe}{shown}`, {args.epochs} epoch(s), {where} ({time.strftime('%Y-%m-%d')})", "",
             f"On {Path(args.data).name}, in one run: the budget (the classic Keras CIFAR-10 tutorial's 5-epoch script, "
             f"a whole process), run before the first round of seeds and after each, took "
             f"**{took} s** here in turn and scored {statistics.mean(refs):.4f} "
             f"on average; each engine ran the recipe with seeds {', '.join(map(str, seeds))}, engines interleaved seed by "
             "seed, each a whole process (start, data from the cache, training, test), and each is divided by the mean "
             f"of the two budget runs around its round. CPU: {cpu_model()} ({os.cpu_count()} cores); the recipe computed in "
             f"{computed}.", "",
             "| engine | seconds (median, min-max) | of the budget (median, min-max) | test accuracy (mean ± std) | per seed |",
             "| --- | --- | --- | --- | --- |"]
    for e, rs in runs.items():
        secs, per_seed = [r["seconds"] for r in rs], ", ".join(f"{r['test_acc']:.4f}" for r in rs)
        ratios = [r["seconds"] / r["budget"] for r in rs]
        lines.append(f"| {e} | {statistics.median(secs):.0f} ({min(secs):.0f}-{max(secs):.0f}) | "
                     f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {means[e]:.4f} "
                     f"{f'± {stds[e]:.4f}' if len(rs) > 1 else '(one seed: no spread)'} | "
                     f"{per_seed} |")
    if note := drift_note(runs):
        lines += ["", note]
    if len(runs) > 1 and len(seeds) == 1:  # no seed spread to hold the engines' spread against
        lines += ["", f"Spread of the engines' accuracy: {spread:.4f}, with one seed: no seed-to-seed spread to judge it "
                  "by (give --seeds 0,1,2 for a verdict)."]
    elif len(runs) > 1:  # one engine: its seeds' spread is the whole story
        verdict = "within" if spread <= 2 * seed_std else "OUTSIDE"
        lines += ["", f"Spread of the engines' mean accuracy: {spread:.4f}; the largest seed-to-seed std: {seed_std:.4f} — "
                  f"the engines agree **{verdict}** twice the seed spread."]
    epochs = max(len(r["epoch_seconds"]) for rs in runs.values() for r in rs)
    lines += ["", "Seconds per epoch of training, from each run's metrics.csv (the rest of a whole process is start-up, "
              "data from the cache and the test):", "",
              "| run | " + " | ".join(f"epoch {i + 1}" for i in range(epochs)) + " |", "| --- |" + " --- |" * epochs]
    for i, seed in enumerate(seeds):
        for e, rs in runs.items():
            if i < len(rs):
                lines.append(f"| {e} seed {seed} | " + " | ".join(f"{s:.0f}" for s in rs[i]["epoch_seconds"]) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--recipe", default="speedrun")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--engines", default="torch,tf,keras")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(HERE / "results" / "recipe-engines.md"))
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every recipe run")
    args = ap.parse_args()
    engines, seeds = args.engines.split(","), [int(s) for s in args.seeds.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CLSF_CACHE"] = str(tmp / "cache")
        subprocess.run([sys.executable, "-m", "clsf", "data", "info", "--data", args.data], check=True, capture_output=True)

        budgets = [budget_run(args.data)]
        runs = {e: [] for e in engines}
        for i, seed in enumerate(seeds):
            for engine in engines:
                runs[engine].append(clsf_run(tmp / "runs", f"{engine}-{seed}", args.recipe, engine, args.data, args.epochs,
                                             "--seed", str(seed), *args.overrides))
                print(f"  {engine} seed {seed}: {runs[engine][-1]['seconds']:.0f} s, test {runs[engine][-1]['test_acc']:.4f}",
                      flush=True)
            budgets.append(budget_run(args.data))  # after the round: its runs lie between budgets[i] and budgets[i + 1]
            for engine in engines:
                bracket(runs[engine][-1], budgets[i], budgets[i + 1])
            write_table(args, budgets, runs, seeds[: i + 1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
