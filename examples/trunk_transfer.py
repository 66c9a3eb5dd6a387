"""The seeds' shared trunk with a second head: train on one task, then reuse every layer but the
head for another, frozen or fine-tuned.

    python examples/trunk_transfer.py [DATA_A] [DATA_B]    # two image folders, or synthetic specs
"""

import sys

import clsf

a = sys.argv[1] if len(sys.argv) > 1 else "synthetic:classes=3,seed=1"
b = sys.argv[2] if len(sys.argv) > 2 else "synthetic:classes=4,seed=2"
common = {"engine": "torch", "epochs": 2, "runs_dir": "runs/example-transfer"}
trunk = clsf.train(clsf.build_config(flags={**common, "run_name": "trunk", "data": {"name": a}}), quiet=True)
for name, extra in (("scratch", {}), ("fine-tuned", {"init_from": str(trunk), "init_head": False}),
                    ("frozen", {"init_from": str(trunk), "init_head": False, "freeze": "trunk"})):
    run = clsf.train(clsf.build_config(flags={**common, **extra, "run_name": name, "data": {"name": b}}), quiet=True)
    print(f"{name:<10} test_acc {clsf.evaluate(run)['test_acc']:.4f}")
