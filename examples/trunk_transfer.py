"""The seeds' shared trunk with a second head: a network trained on half of a dataset's classes, its
every layer but the head reused for the other half — fine-tuned, or frozen with a new head.

    python examples/trunk_transfer.py [DATA] [--epochs N]    # DATA: 4+ classes; default: the CIFAR-10 sample
"""

import argparse
import sys
from pathlib import Path

import numpy as np

import clsf
from clsf.errors import UserError

p = argparse.ArgumentParser(description="a trunk trained on half of a dataset's classes, reused for the other half")
p.add_argument("data", nargs="?", default="cifar10-sample", help="a dataset of 4 or more classes (default: %(default)s)")
p.add_argument("--epochs", type=int, default=4, help="epochs of each run (default: %(default)s)")
args = p.parse_args()
out = Path("runs/example-transfer")
try:
    ds = clsf.load_dataset(args.data)
    half = ds.num_classes // 2
    out.mkdir(parents=True, exist_ok=True)
    for task, first in (("a", 0), ("b", half)):  # classes [0, half) and [half, K): two tasks from one dataset
        arrays = {}
        for split in ("train", "test"):
            keep = (ds[split].y >= first) & (ds[split].y < (half if first == 0 else ds.num_classes))
            arrays[f"x_{split}"], arrays[f"y_{split}"] = ds[split].x[keep], ds[split].y[keep] - first
        np.savez(out / f"{task}.npz", **arrays)
    common = {"engine": "torch", "epochs": args.epochs, "runs_dir": str(out), "model": {"name": "resnet-s"}}
    trunk = clsf.train(clsf.build_config(flags={**common, "run_name": "trunk", "data": {"name": str(out / "a.npz")}}), quiet=True)
    for name, extra in (("scratch", {}), ("fine-tuned", {"init_from": str(trunk), "init_head": False}),
                        ("frozen", {"init_from": str(trunk), "init_head": False, "freeze": "trunk"})):
        cfg = clsf.build_config(flags={**common, **extra, "run_name": name, "data": {"name": str(out / "b.npz")}})
        print(f"{name:<10} test_acc {clsf.evaluate(clsf.train(cfg, quiet=True))['test_acc']:.4f}")
except UserError as e:  # one line and the usage, not a traceback
    sys.exit(f"clsf: error: {e}\n{p.format_usage().strip()}")
