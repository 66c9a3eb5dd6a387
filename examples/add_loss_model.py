"""The seeds' add_loss model: an activity penalty and kernel regularisers, defined in a model file,
trained by any engine, which adds them to the loss.

    python examples/add_loss_model.py [ENGINE] [DATA]
"""

import argparse
import sys
from pathlib import Path

import clsf
from clsf.errors import UserError

p = argparse.ArgumentParser(description="an add_loss model (activity penalty, kernel regularisers) against a plain MLP")
p.add_argument("engine", nargs="?", default="tf", help="any engine (default: %(default)s)")
p.add_argument("data", nargs="?", default="mnist", help="mnist (found through $CLSF_DATA), a path to mnist.npz, or "
               "synthetic:size=28x28x1 (default: %(default)s)")
args = p.parse_args()
model = Path(__file__).parent / "models" / "add-loss-mlp.yaml"  # dense l2/l1 + activity_penalty
try:
    for name, extra in (("penalised", [f"model.name={model}"]), ("plain", ["model.name=mnist-mlp"])):
        cfg = clsf.build_config(flags={"engine": args.engine, "epochs": 2, "data": {"name": args.data}, "run_name": name,
                                       "runs_dir": "runs/example-add-loss"}, overrides=extra)
        run = clsf.train(cfg, quiet=True)
        rows = (run / "metrics.csv").read_text().splitlines()[1:]
        print(f"{name:<10} train_loss per epoch (penalties included): {[round(float(r.split(',')[1]), 4) for r in rows]}")
except UserError as e:  # one line and the usage, not a traceback
    sys.exit(f"clsf: error: {e}\n{p.format_usage().strip()}")
