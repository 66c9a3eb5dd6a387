"""Acceptance benchmark: the default recipe on real CIFAR-10 through every engine and several seeds.

    python bench/engines.py --data ../shared/data/cifar10-jpeg.tar.gz [--epochs 5] [--seeds 0,1,2] \
        [--folder /tmp/clsf-bench/compare] [--out bench/results/engines.md] [--figure docs/compare-cifar10.png]

1. `clsf compare` trains every (seed, engine) in its own process (TF and torch never share one), the
   engines of a seed from the same initial weights; run again, it finishes only what is missing.
2. Each seed-0 run is evaluated by the other framework (`clsf evaluate RUN --engine E`, one process
   each) and compared with the logits saved at training.
3. The tables are written from the compare folder's summary.json and run directories, and the
   compare's curve picture is copied to --figure for the README.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import machine


def clsf(*args: str, capture: bool = False) -> str:
    print("$ clsf", " ".join(args), flush=True)
    r = subprocess.run([sys.executable, "-m", "clsf", *args], check=True, text=True, capture_output=capture)
    return r.stdout if capture else ""


def pm(ms, scale=1.0, digits=2) -> str:
    mean, std = ms
    return f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--model", default="seed-cnn")
    ap.add_argument("--engines", default="keras,tf,torch")
    ap.add_argument("--folder", default="/tmp/clsf-bench/compare-cifar10", help="the compare folder (outside the repo)")
    ap.add_argument("--out", default="bench/results/engines.md")
    ap.add_argument("--figure", default="docs/compare-cifar10.png")
    args = ap.parse_args()

    folder = Path(args.folder)
    clsf("compare", "--engines", args.engines, "--model", args.model, "--data", args.data, "--epochs", str(args.epochs),
         "--seeds", args.seeds, "--out", str(folder))
    plan = json.loads((folder / "plan.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())

    cross = []
    for r in plan["runs"]:
        if r["seed"] != plan["seeds"][0]:
            continue
        run = folder / "runs" / r["name"]
        other = "torch" if r["engine"] != "torch" else "keras"
        rep = json.loads(clsf("evaluate", str(run), "--engine", other, "--json", capture=True))
        own = json.loads((run / "final.json").read_text())["test_acc"]
        cross.append((r["engine"], other, own, rep["test_acc"], rep["agreement"]["same_prediction"], rep["agreement"]["max_abs_logit_diff"]))

    env = json.loads((folder / "runs" / plan["runs"][0]["name"] / "env.json").read_text())
    pk = env["packages"]
    lines = [
        f"# {args.model} on {Path(args.data).name}: {len(plan['engines'])} engines x {len(plan['seeds'])} seeds, {args.epochs} epochs, default recipe",
        "",
        f"Machine: {machine()}, {platform.platform()}; "
        f"tensorflow {pk.get('tensorflow-cpu') or pk.get('tensorflow')}, keras {pk.get('keras')}, torch {pk.get('torch')}"
        f"{', jax ' + pk['jax'] if 'jax' in pk else ''}. "
        f"Measured {time.strftime('%Y-%m-%d')} with `clsf compare` (every run its own process, one at a time).",
        "",
        f"**{summary['verdict']}.**",
        "",
        "| engine | runs | test acc (%) | test loss | train seconds | images/s | peak memory (MiB) | step-0 max abs logit diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, (e, p) in enumerate(summary["engines"].items()):
        d = summary["step0_max_abs_logit_diff"].get(e)
        lines.append(f"| {e} | {p['finished']}/{p['of']} | {pm(p['test_acc'], 100)} | {pm(p['test_loss'], digits=4)} | "
                     f"{pm(p['train_s'], digits=1)} | {pm(p['images_per_s'], digits=0)} | {pm(p['peak_mem_mb'], digits=0)} | "
                     f"{'reference' if i == 0 else '-' if d is None else f'{d:.1e}'} |")
    lines += ["", "Mean ± standard deviation over seeds "
              f"{', '.join(map(str, plan['seeds']))}; images/s is each run's median epoch.", "",
              "Each seed-0 run's weights evaluated by the other framework (`clsf evaluate RUN --engine E`):", "",
              "| trained with | evaluated with | test acc (trained) | test acc (evaluated) | same prediction | max abs logit diff |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {e} | {o} | {a:.4f} | {b:.4f} | {100 * p:.2f}% | {d:.1e} |" for e, o, a, b, p, d in cross]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "report_files" / "compare_curves.png", args.figure)
    print("\n".join(lines))
    print(f"wrote {out} and {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
