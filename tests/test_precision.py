"""Mixed precision and memory layout. precision=bf16|fp16 is a GPU option, refused on a CPU with
one line; its code paths (autocast + loss scaling in torch, Keras' dtype policy + LossScaleOptimizer)
are exercised here on the CPU by lifting that refusal, so they are correct before a GPU sees them.
torch.channels_last changes the memory order only, never the numbers."""

import json

import numpy as np
import pytest

from clsf import build_config, train
from clsf.cli import main
from clsf.models.transfer import load_npz
from helpers import engine_params

DATA = "synthetic:train=300,test=60,size=12x12x3,classes=3"
SMALL = ["model.name=seed-cnn", "model.args.widths=[8, 16]", "model.args.dense=32", f"data.name={DATA}"]
ENGINES = engine_params()


def _run(tmp_path, engine, name, *extra):
    cfg = build_config(flags={"engine": engine, "epochs": 2, "runs_dir": str(tmp_path), "run_name": name}, overrides=[*SMALL, *extra])
    run = train(cfg, quiet=True)
    losses = [float(line.split(",")[1]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return run, losses


@pytest.mark.parametrize("engine", ENGINES)
def test_mixed_precision_is_refused_on_a_cpu(tmp_path, capsys, engine):
    assert main(["train", "--engine", engine, "--runs-dir", str(tmp_path), "--data", DATA, *SMALL[:3], "precision=bf16"]) == 2
    assert "precision=bf16 is for GPUs and this run is on cpu; use precision=fp32" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_like_float32(tmp_path, monkeypatch, engine, precision):
    import importlib

    for module in ("clsf.engines.torch_loop", "clsf.engines.keras_common"):  # lift the GPU-only refusal
        if importlib.util.find_spec("torch" if "torch" in module else "tensorflow"):
            monkeypatch.setattr(f"{module}.check_precision", lambda *a: None)
    _, full = _run(tmp_path, engine, "fp32")
    run, mixed = _run(tmp_path, engine, precision, f"precision={precision}")
    # the same run in 8-bit (bf16) or 11-bit (fp16) mantissas: the loss curve within a few hundredths
    assert np.allclose(mixed, full, atol=0.05) and mixed[-1] < mixed[0]
    weights = load_npz(run / "checkpoints" / "last" / "weights.npz")
    assert all(a.dtype == np.float32 for layer in weights.values() for a in layer.values())  # master weights stay float32
    logits = np.load(run / "predictions.npz")["logits"]
    assert logits.dtype == np.float32 and json.loads((run / "final.json").read_text())["test_acc"] > 0.5
    if engine != "torch":  # the policy was Keras' global setting only while this model was built
        import keras

        assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.torch
def test_channels_last_changes_the_layout_not_the_numbers(tmp_path):
    import torch

    from clsf.engines import create_engine
    from clsf.run.setup import build_spec

    cfg = build_config(flags={"engine": "torch"}, overrides=SMALL)  # the default
    engine = create_engine(cfg, build_spec(cfg, (12, 12, 3), 3), 10)
    conv = engine.model.leaf("conv1")
    assert getattr(conv, "op", conv).weight.is_contiguous(memory_format=torch.channels_last)
    a = load_npz(_run(tmp_path, "torch", "nchw", "torch.channels_last=false")[0] / "checkpoints" / "last" / "weights.npz")
    b = load_npz(_run(tmp_path, "torch", "nhwc")[0] / "checkpoints" / "last" / "weights.npz")
    for layer in a:
        for k in a[layer]:
            assert np.allclose(a[layer][k], b[layer][k], rtol=1e-4, atol=1e-6), f"{layer}.{k}"
