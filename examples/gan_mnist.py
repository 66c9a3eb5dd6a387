"""The seeds' MNIST GAN, scored by a classifier trained first (the judge).

    python examples/gan_mnist.py [DATA] [EPOCHS]      # DATA: mnist (default) or 28x28x1 synthetic
"""

import sys

import clsf

data, epochs = (sys.argv[1] if len(sys.argv) > 1 else "mnist"), int(sys.argv[2]) if len(sys.argv) > 2 else 1
runs = "runs/example-gan"
judge = clsf.train(clsf.build_config(flags={"engine": "torch", "model": {"name": "mnist-mlp"}, "epochs": 2,
                                            "data": {"name": data}, "runs_dir": runs, "run_name": "judge"}), quiet=True)
cfg = clsf.build_config(flags={"engine": "torch", "epochs": epochs, "batch_size": 64, "data": {"name": data}, "runs_dir": runs,
                               "run_name": "gan", "gan": {"judge": str(judge), "sample_every": 50}})
run = clsf.gan(cfg, quiet=True)
print(f"samples in {run / 'samples'}; quality per grid in {run / 'samples' / 'quality.csv'}")
print((run / "samples" / "quality.csv").read_text() if (run / "samples" / "quality.csv").exists() else "(no grid yet)")
