"""Mixed precision and memory layout. precision=bf16|fp16 needs a GPU, or for bf16 a CPU with bf16
matrix instructions (AMX, AVX512-BF16); elsewhere it is refused with one line. Its code paths (autocast + loss scaling in torch, Keras' dtype policy + LossScaleOptimizer)
are exercised here on the CPU by lifting that refusal, so they are correct before a GPU sees them.
torch.channels_last changes the memory order only, never the numbers."""

import json

import numpy as np
import pytest

from clsf import build_config, train
from clsf.cli import main
from clsf.models.transfer import load_npz
from helpers import engine_params, long

DATA = "synthetic:train=300,test=60,size=12x12x3,classes=3"
SMALL = ["model.name=seed-cnn", "model.args.widths=[8, 16]", "model.args.dense=32", f"data.name={DATA}"]
ENGINES = engine_params()


def _run(tmp_path, engine, name, *extra):
    cfg = build_config(flags={"engine": engine, "epochs": 2, "runs_dir": str(tmp_path), "run_name": name}, overrides=[*SMALL, *extra])
    run = train(cfg, quiet=True)
    losses = [float(line.split(",")[1]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return run, losses


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_is_refused_on_a_cpu_without_its_units(tmp_path, capsys, monkeypatch, engine, precision):
    monkeypatch.setattr("clsf.engines.precision.cpu_has_bf16", lambda: False)
    assert main(["train", "--engine", engine, "--runs-dir", str(tmp_path), "--data", DATA, *SMALL[:3], f"precision={precision}"]) == 2
    err = capsys.readouterr().err
    if precision == "bf16":
        assert "precision=bf16 needs a GPU or a CPU with bf16 matrix instructions (amx_bf16 or avx512_bf16)" in err
    else:  # no CPU here computes in fp16, whatever its flags
        assert "precision=fp16 is for GPUs and this run is on cpu; use precision=fp32" in err
    assert "Traceback" not in err and not any(tmp_path.iterdir())


def test_cpu_bf16_units_are_read_from_the_cpu_flags(tmp_path):
    from clsf.engines.precision import cpu_has_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\nbugs\t\t: spectre\n")
    assert not cpu_has_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n")
    assert cpu_has_bf16(str(info))
    info.write_text("flags\t\t: avx512_bf16\n")
    assert cpu_has_bf16(str(info))
    assert not cpu_has_bf16(str(tmp_path / "absent"))  # another OS: no, so bf16 stays a GPU option


@pytest.mark.parametrize("engine", long(ENGINES, "keras"))
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_like_float32(tmp_path, monkeypatch, engine, precision):
    import importlib

    for module in ("clsf.engines.torch_loop", "clsf.engines.keras_common"):  # lift the refusal where no unit computes in it
        if importlib.util.find_spec("torch" if "torch" in module else "tensorflow"):
            monkeypatch.setattr(f"{module}.resolve_precision", lambda cfg, *a: cfg.precision)
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


@pytest.mark.parametrize("engine", long(ENGINES, "keras"))
def test_auto_precision_is_bf16_only_where_the_device_computes_in_it(tmp_path, monkeypatch, engine):
    """bf16 with the CPU's bf16 units, fp32 without; and for the TensorFlow engines fp32 also where
    the process runs Eigen's kernels (a narrow network's), which convolve bf16 far slower than float32."""
    _, full = _run(tmp_path, engine, "fp32")
    tensorflow = engine in ("tf", "keras")
    # (bf16 units, oneDNN's kernels, expected); keras-jax: test_keras_backends
    cases = [(False, True, "fp32"), (True, True, "bf16")] + ([(True, False, "fp32")] if tensorflow else [])
    for i, (has_units, onednn, expected) in enumerate(cases):
        monkeypatch.setattr("clsf.engines.precision.cpu_has_bf16", lambda: has_units)
        if tensorflow:  # the suite's processes run Eigen's
            monkeypatch.setattr("clsf.engines.tf_kernels.onednn_enabled", lambda: onednn)
        run, losses = _run(tmp_path, engine, f"auto-{i}", "precision=auto")
        assert json.loads((run / "env.json").read_text())["precision"] == expected
        if expected == "bf16":  # other numbers, the same curve
            assert not np.allclose(losses, full, rtol=0, atol=1e-6) and np.allclose(losses, full, atol=0.05)
        else:  # the float32 run itself
            assert np.allclose(losses, full, rtol=0, atol=1e-6)


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


@pytest.mark.torch
@pytest.mark.parametrize("widths, nhwc", [("[8, 8, 8]", True), ("[4, 8, 8]", False)])
def test_torch_keeps_a_network_with_narrow_convolutions_in_nchw(widths, nhwc):
    """oneDNN ran a resnet-s 4 channels wide 25x slower channels-last (bench/results/observations.md,
    O2): the rule the TensorFlow engines' kernel choice shares (models.spec.narrow_convolutions)."""
    import torch

    from clsf.engines import create_engine
    from clsf.run.setup import build_spec

    cfg = build_config(flags={"engine": "torch"}, overrides=["model.name=resnet-s", f"model.args.widths={widths}",
                                                             "model.args.blocks=1"])
    engine = create_engine(cfg, build_spec(cfg, (10, 10, 3), 3), 1)
    assert (engine.memory_format == torch.channels_last) == nhwc


ENGINE_IN_A_NEW_PROCESS = """
import sys
from clsf.config import build_config
from clsf.engines import create_engine
from clsf.engines.tf_kernels import onednn_enabled
from clsf.errors import UserError
from clsf.run.setup import build_spec

def engine(widths):
    cfg = build_config(flags={"engine": "tf"}, overrides=["model.name=resnet-s", f"model.args.widths={widths}",
                                                          "model.args.blocks=1"])
    return create_engine(cfg, build_spec(cfg, (10, 10, 3), 3), 1)

engine(sys.argv[1])
print(onednn_enabled())
try:  # a narrow network after the process chose oneDNN
    engine("[4, 8, 8]")
    print("narrow accepted")
except UserError as e:
    print(e)
"""


@pytest.mark.tf
@pytest.mark.parametrize("widths, exported, on", [  # a TF import each (8 s): a user's or a parent's value `long`
    ("[8, 8, 8]", None, True), pytest.param("[8, 8, 8]", "0", False, marks=pytest.mark.long),
    ("[4, 8, 8]", None, False), pytest.param("[4, 8, 8]", "clsf:1", False, marks=pytest.mark.long)])
def test_tensorflow_computes_with_onednn_except_for_narrow_networks(widths, exported, on):
    """TF turns oneDNN on by itself only on AVX-512/AMX CPUs; clsf turns it on everywhere
    (bench/results/observations.md, O13) but for a network with a convolution under 8 channels wide,
    whose gradients oneDNN computed wrong (O14), and leaves a user's TF_ENABLE_ONEDNN_OPTS=0 alone.
    TF reads it once, at import: a fresh process each, where a narrow network after a oneDNN one
    is refused in one line. A value clsf set in a parent process ("clsf:1", as `clsf compare` hands its
    environment to each run) is chosen afresh. (tests/conftest.py pins Eigen for the suite's own processes.)"""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "CLSF_ONEDNN")}
    if exported is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = exported.removeprefix("clsf:")
        if exported.startswith("clsf:"):
            env["CLSF_ONEDNN"] = env["TF_ENABLE_ONEDNN_OPTS"]
    out = subprocess.run([sys.executable, "-c", ENGINE_IN_A_NEW_PROCESS, widths], env=env, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()
    assert out[-2] == str(on)
    if on:
        assert out[-1].startswith("TensorFlow runs oneDNN's kernels in this process") and "(stem, s1b1_conv1" in out[-1]
    else:
        assert out[-1] == "narrow accepted"
