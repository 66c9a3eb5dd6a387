"""Train the same recipe in Keras and PyTorch from the same initial weights, then report.

    python examples/compare_and_report.py [DATA] [OUT]
"""

import argparse
import sys

import clsf
from clsf.errors import UserError

p = argparse.ArgumentParser(description="one recipe in keras and torch, two seeds, the same initial weights; a report")
p.add_argument("data", nargs="?", default="cifar10-sample", help="a dataset name or path (default: %(default)s)")
p.add_argument("out", nargs="?", default="runs/example-compare", help="the compare folder (default: %(default)s)")
args = p.parse_args()
try:
    cfg = clsf.build_config(flags={"epochs": 2, "data": {"name": args.data}})
    # two seeds: the verdict holds the engines' spread against the seed-to-seed one (one seed cannot decide)
    folder = clsf.compare(cfg, engines=["keras", "torch"], seeds=[0, 1], out=args.out)  # each run in its own process
except UserError as e:
    sys.exit(f"clsf: error: {e}\n{p.format_usage().strip()}")
print(f"open {folder / 'report.html'}")
