"""Accuracy on the real data in ../shared/data (marked slow: `python -m pytest -m slow`).
The CIFAR-10 acceptance numbers for all engines live in bench/engines.py and the README."""

import json

import pytest

from clsf.config import build_config
from clsf.run.train import train
from helpers import SHARED

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("engine", ["keras", "tf", "torch"])
def test_mnist_mlp_one_epoch(engine, tmp_path):
    if not (SHARED / "mnist.npz").exists():
        pytest.skip("../shared/data/mnist.npz is not here")
    cfg = build_config(flags={"engine": engine, "epochs": 1, "runs_dir": str(tmp_path), "model": {"name": "mnist-mlp"},
                              "data": {"name": str(SHARED / "mnist.npz")}})
    final = json.loads((train(cfg, quiet=True) / "final.json").read_text())
    assert final["test_acc"] >= 0.94 and final["test_images"] == 10_000
