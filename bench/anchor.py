"""Benchmark: clsf's `--recipe speedrun` (or another: --recipe speedrun-muon) in torch against
airbench94's own published script, side by side in one run on this machine, both bracketed by the
tutorial budget.

    python bench/anchor.py --script PATH/TO/legacy/airbench94.py --data ../shared/data/cifar10-jpeg.tar.gz
                           [--epochs 9.9] [--recipe speedrun] [--clsf-epochs 10] [--seeds 0,1,2] [--precision auto]
                           [KEY=VALUE ...]

The anchor is the real thing: the user's copy of airbench94.py (KellerJordan/cifar10-airbench,
`legacy/airbench94.py`; nothing of it is kept in this repository, and no network is used), changed
only so that it runs on a CPU and is timed by the wall clock. `cpu_script` makes each change as an
exact text replacement that must match, so a different file fails loudly instead of running half
changed:
  - torchvision (no CPU build here) serves it only to download CIFAR-10 and for `T.Normalize`:
    the data is written beforehand as the `cifar10/{train,test}.pt` files it loads (from --data:
    the same images clsf reads), and Normalize becomes the same (x - mean) / std on the channel axis;
  - `.cuda()`, `map_location=gpu` and CUDA events go; wall-clock events time its printed seconds;
  - fp16 (`.half()`, the images and the network, batch norm kept in fp32 as published) becomes
    bf16 where the CPU has bf16 matrix instructions (--precision auto, as clsf's `precision: auto`
    decides), else fp32; its Lookahead, which averages the fp16 and fp32 tensors, averages bf16 ones
    too. (Not autocast: that would also run the whitening's patch covariance, fp32 as published, in bf16.)
  - its 25 runs become one per process (`--epochs` sets its `train_epochs`, 9.9 as published).
Each round (one seed) runs the anchor and clsf, each a whole process from start to its test
accuracy (airbench's TTA accuracy; clsf's test accuracy with the recipe's TTA), and the tutorial's
5-epoch script before the first round and after every round; each run is divided by the mean of
the two budget runs around it (the table says where those two differ by more than 20%). The anchor
draws its own seeds (it sets none). Writes bench/results/anchor.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, bracket, budget_run, clsf_run, cpu_model, drift_note

NORMALIZE = '''
import time as _time


class T:  # (clsf bench) torchvision.transforms.Normalize, the script's one use of torchvision left
    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.as_tensor(mean).view(-1, 1, 1), torch.as_tensor(std).view(-1, 1, 1)

        def __call__(self, x):  # (N, C, H, W)
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class _WallEvent:  # (clsf bench) a CUDA event's record / elapsed_time (ms) by the wall clock
    def record(self):
        self.t = _time.perf_counter()

    def elapsed_time(self, end):
        return 1e3 * (end.t - self.t)

CLSF_DTYPE = torch.bfloat16 if CLSF_BF16 else torch.float32  # (clsf bench) in place of fp16
'''

# (what the published script says, what it becomes, how many times it says it)
CHANGES = [
    ("import torchvision\nimport torchvision.transforms as T\n", NORMALIZE, 1),
    ("map_location=torch.device(gpu)", "map_location='cpu'", 1),
    ("self.images = (self.images.half() / 255)", "self.images = (self.images.to(CLSF_DTYPE) / 255)", 1),
    ("net = net.half().cuda()", "net = net.to(CLSF_DTYPE)", 1),
    ("net_param.dtype in (torch.half, torch.float)", "net_param.dtype in (torch.half, CLSF_DTYPE, torch.float)", 1),
    ("torch.cuda.Event(enable_timing=True)", "_WallEvent()", 2),
    ("torch.cuda.synchronize()", "None", 3),
    ("'train_epochs': 9.9,", "'train_epochs': CLSF_EPOCHS,", 1),
    ("accs = torch.tensor([main(run) for run in range(25)])", "accs = torch.tensor([main(run) for run in range(1)])", 1),
]


def cpu_script(text: str, epochs: float, bf16: bool) -> str:
    """airbench94.py changed to run once on a CPU (each change must find its text as often as expected)."""
    for old, new, times in CHANGES:
        found = text.count(old)
        if found != times:
            raise SystemExit(f"this airbench94.py says {old!r} {found} times, not {times}: it is not the published "
                             "legacy/airbench94.py this bench knows how to run on a CPU.")
        text = text.replace(old, new)
    if "cuda" in text.replace("torch.backends.cudnn", ""):
        raise SystemExit("this airbench94.py still names CUDA after the CPU changes; it is not the script this bench knows.")
    return f"CLSF_EPOCHS = {epochs!r}\nCLSF_BF16 = {bf16!r}\n" + text


def write_cifar_pt(data: str, folder: Path) -> None:
    """The `cifar10/{train,test}.pt` files the script loads (uint8 NHWC images, int64 labels, class
    names), from the images clsf reads."""
    import torch

    from clsf.data import load_dataset

    ds = load_dataset(data)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        s = ds[split]
        torch.save({"images": torch.from_numpy(s.x), "labels": torch.from_numpy(s.y), "classes": ds.class_names},
                   folder / f"{split}.pt")


def anchor_run(script: Path, cwd: Path) -> dict:
    """The changed script as a whole process: its seconds and its TTA test accuracy."""
    print("$ airbench94.py (CPU)", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"airbench94.py failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    mean = re.search(r"Mean: ([0-9.]+)", r.stdout)
    return {"seconds": seconds, "test_acc": float(mean.group(1)), "log": r.stdout}


def write_table(args, budgets: list[dict], runs: dict, seeds: list[int], bf16: bool) -> None:
    took = ", ".join(f"{b['seconds']:.0f}" for b in budgets)
    shown = "".join(f" {shlex.quote(o)}" for o in args.overrides)
    lines = [f"# clsf `--recipe {args.recipe}` (torch) against airbench94's own script ({time.strftime('%Y-%m-%d')})", "",
             f"On {Path(args.data).name}, {cpu_model()} ({os.cpu_count()} cores), computed in {'bf16' if bf16 else 'fp32'}. "
             f"airbench94.py (legacy/airbench94.py of KellerJordan/cifar10-airbench, changed only to run on a CPU: "
             f"bench/anchor.py) for {args.epochs:g} epochs at batch 1024; clsf `--recipe {args.recipe} --engine torch "
             f"--epochs {args.clsf_epochs}{shown}`. Each a whole process (start, data, training, test with TTA), one of "
             f"each a round, the classic Keras CIFAR-10 tutorial's 5-epoch script run before the first round and after "
             f"each ({took} s here in turn); each run is divided by the mean of the two budget runs around it.", "",
             "| | epochs | seconds (median, min-max) | of the budget (median, min-max) | test accuracy (mean ± std) | per run |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, rs in runs.items():
        secs, ratios, accs = [r["seconds"] for r in rs], [r["seconds"] / r["budget"] for r in rs], [r["test_acc"] for r in rs]
        spread = f"± {statistics.stdev(accs):.4f}" if len(accs) > 1 else "(one run)"
        lines.append(f"| {name} | {rs[0]['epochs']:g} | {statistics.median(secs):.0f} ({min(secs):.0f}-{max(secs):.0f}) | "
                     f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {statistics.mean(accs):.4f} "
                     f"{spread} | {', '.join(f'{a:.4f}' for a in accs)} |")
    a, c = runs["airbench94.py"], runs[f"clsf {args.recipe}, torch"]
    pairs = [x["seconds"] / y["seconds"] for x, y in zip(c, a)]
    lines += ["", f"clsf's whole process over the anchor's, round by round: {', '.join(f'{p:.2f}x' for p in pairs)} "
              f"(median {statistics.median(pairs):.2f}x)."]
    if note := drift_note(runs):
        lines += ["", note]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--script", required=True, type=Path, help="your copy of airbench94.py (legacy/airbench94.py)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=float, default=9.9, help="airbench94's train_epochs (9.9 as published)")
    ap.add_argument("--recipe", default="speedrun", help="clsf's recipe (speedrun-muon: 8 epochs)")
    ap.add_argument("--clsf-epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    ap.add_argument("--out", default=str(HERE / "results" / "anchor.md"))
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for the clsf runs")
    args = ap.parse_args()
    from clsf.engines.precision import cpu_has_bf16

    bf16 = args.precision == "bf16" or (args.precision == "auto" and cpu_has_bf16())
    seeds = [int(s) for s in args.seeds.split(",")]
    if not args.script.is_file():
        raise SystemExit(f"{args.script}: no such file; give --script your copy of airbench94.py "
                         "(legacy/airbench94.py of KellerJordan/cifar10-airbench).")
    script = cpu_script(args.script.read_text(), args.epochs, bf16)
    precision = ["precision=bf16" if bf16 else "precision=fp32"]  # both compute alike

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CLSF_CACHE"] = str(tmp / "cache")
        subprocess.run([sys.executable, "-m", "clsf", "data", "info", "--data", args.data], check=True, capture_output=True)
        write_cifar_pt(args.data, tmp / "anchor" / "cifar10")
        (tmp / "anchor" / "airbench94_cpu.py").write_text(script)

        budgets = [budget_run(args.data)]
        runs = {"airbench94.py": [], f"clsf {args.recipe}, torch": []}
        for i, seed in enumerate(seeds):
            a = anchor_run(tmp / "anchor" / "airbench94_cpu.py", tmp / "anchor")
            runs["airbench94.py"].append({**a, "epochs": args.epochs})
            print(f"  airbench94.py: {a['seconds']:.0f} s, TTA test {a['test_acc']:.4f}", flush=True)
            c = clsf_run(tmp / "runs", f"{args.recipe}-{seed}", args.recipe, "torch", args.data, args.clsf_epochs,
                         "--seed", str(seed), *precision, *args.overrides)
            runs[f"clsf {args.recipe}, torch"].append(c)
            print(f"  clsf seed {seed}: {c['seconds']:.0f} s, test {c['test_acc']:.4f}", flush=True)
            budgets.append(budget_run(args.data))
            for rs in runs.values():
                bracket(rs[-1], budgets[i], budgets[i + 1])
            write_table(args, budgets, runs, seeds[: i + 1], bf16)
            (Path(args.out).with_suffix(".log")).write_text("\n\n".join(r["log"] for r in runs["airbench94.py"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
