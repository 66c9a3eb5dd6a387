"""The seeds' add_loss model: an activity penalty and kernel regularisers, defined in a model file,
trained by any engine, which adds them to the loss.

    python examples/add_loss_model.py [ENGINE] [DATA]
"""

import sys
from pathlib import Path

import clsf

engine, data = (sys.argv[1] if len(sys.argv) > 1 else "tf"), (sys.argv[2] if len(sys.argv) > 2 else "mnist")
model = Path(__file__).parent / "models" / "add-loss-mlp.yaml"  # dense l2/l1 + activity_penalty
for name, extra in (("penalised", [f"model.name={model}"]), ("plain", ["model.name=mnist-mlp"])):
    cfg = clsf.build_config(flags={"engine": engine, "epochs": 2, "data": {"name": data}, "run_name": name,
                                   "runs_dir": "runs/example-add-loss"}, overrides=extra)
    run = clsf.train(cfg, quiet=True)
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    print(f"{name:<10} train_loss per epoch (penalties included): {[round(float(r.split(',')[1]), 4) for r in rows]}")
