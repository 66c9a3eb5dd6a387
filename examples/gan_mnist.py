"""The seeds' MNIST GAN, scored by a classifier trained first (the judge).

    python examples/gan_mnist.py [DATA] [EPOCHS]      # DATA: mnist (default) or 28x28x1 synthetic
"""

import argparse
import sys

import clsf
from clsf.errors import UserError

p = argparse.ArgumentParser(description="the MNIST GAN, its samples scored by a classifier trained first")
p.add_argument("data", nargs="?", default="mnist", help="mnist (found through $CLSF_DATA), a path to mnist.npz, or "
               "synthetic:size=28x28x1 (default: %(default)s)")
p.add_argument("epochs", nargs="?", type=int, default=1, help="the GAN's epochs (default: %(default)s)")
args = p.parse_args()
runs = "runs/example-gan"
try:
    judge = clsf.train(clsf.build_config(flags={"engine": "torch", "model": {"name": "mnist-mlp"}, "epochs": 2,
                                                "data": {"name": args.data}, "runs_dir": runs, "run_name": "judge"}), quiet=True)
    cfg = clsf.build_config(flags={"engine": "torch", "epochs": args.epochs, "batch_size": 64, "data": {"name": args.data},
                                   "runs_dir": runs, "run_name": "gan", "gan": {"judge": str(judge), "sample_every": 50}})
    run = clsf.gan(cfg, quiet=True)
except UserError as e:  # one line and the usage, not a traceback
    sys.exit(f"clsf: error: {e}\n{p.format_usage().strip()}")
print(f"samples in {run / 'samples'}; quality per grid in {run / 'samples' / 'quality.csv'}")
print((run / "samples" / "quality.csv").read_text() if (run / "samples" / "quality.csv").exists() else "(no grid yet)")
