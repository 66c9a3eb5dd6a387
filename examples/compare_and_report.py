"""Train the same recipe in Keras and PyTorch from the same initial weights, then report.

    python examples/compare_and_report.py [DATA] [OUT]
"""

import sys

import clsf

data, out = (sys.argv[1] if len(sys.argv) > 1 else "cifar10-sample"), (sys.argv[2] if len(sys.argv) > 2 else "runs/example-compare")
cfg = clsf.build_config(flags={"epochs": 2, "data": {"name": data}})
# two seeds: the verdict holds the engines' spread against the seed-to-seed one (one seed cannot decide)
folder = clsf.compare(cfg, engines=["keras", "torch"], seeds=[0, 1], out=out)  # each run in its own process
print(f"open {folder / 'report.html'}")
