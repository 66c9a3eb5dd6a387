"""The Keras engines on JAX and PyTorch (keras-jax, keras-torch) keep the engine contract: exact
resume at an epoch's end and inside one (dropout and augmentation on), trunk transfer with
freeze/unfreeze, evaluation and export of their runs by the other engines, and a clear refusal where
Keras already runs on another backend. Each runs in a process of its own, as clsf runs them."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clsf.cli import main
from clsf.engines import ENGINES
from helpers import png_bytes

HERE = Path(__file__).parent
# Both contracts are `long` (CI's second step): about 30 s each of the default suite's 12 minutes. So
# are the two backends' parity runs (test_parity.py, test_muon.py); the default suite trains keras-jax
# for one epoch in test_jax_kernels.py.
OTHER_BACKENDS = [pytest.param(e.name, marks=[pytest.mark.jax if e.requires == "jax" else pytest.mark.torch, pytest.mark.long])
                  for e in ENGINES.values() if e.keras_backend not in (None, "tensorflow")]


def test_every_registered_engine_is_tested_in_process_or_here():
    from helpers import engine_params

    in_process = {p if isinstance(p, str) else p.values[0] for p in engine_params()}
    here = {p.values[0] for p in OTHER_BACKENDS}
    assert in_process | here == set(ENGINES) and not in_process & here and here == {"keras-jax", "keras-torch"}


@pytest.fixture(scope="module", params=OTHER_BACKENDS)
def contract(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    r = subprocess.run([sys.executable, str(HERE / "keras_backend_contract.py"), request.param, str(tmp)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return request.param, tmp, json.loads(r.stdout.strip().splitlines()[-1])


def test_resume_at_and_inside_epochs_gives_the_uninterrupted_run(contract):
    _, _, out = contract
    assert out["cut_meta"] == {"epoch": 0, "step": 2}  # the first pause was inside epoch 1
    assert out["averaged"]  # the runs keep a weight average (optim.ema), which the resumes continue
    assert [r["epoch"] for r in out["cut_rows"]] == [1, 2]
    for a, b in zip(out["whole_rows"], out["cut_rows"]):
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-7), (k, a, b)
    assert out["logits_diff"] <= 1e-5


def test_auto_precision_takes_bf16_only_where_the_backends_cpu_kernels_compute_in_it(contract):
    engine, _, out = contract
    # XLA's CPU backend computes a bf16 convolution in float32 between casts (measured no faster): fp32
    assert out["auto_precision"] == {"keras-jax": "fp32", "keras-torch": "bf16"}[engine]


def test_trunk_transfer_freezes_then_trains(contract):
    engine, _, out = contract
    assert out["trunk_moved_frozen"] == 0.0 and out["head_moved_frozen"] > 0
    if engine == "keras-jax":  # frozen for good; unfreezing is refused in one line saying why
        assert out["trunk_moved_after"] == 0.0 and "unfreeze_after is not available with keras-jax" in out["unfreeze_refused"]
    else:
        assert out["trunk_moved_after"] > 0  # unfrozen after epoch 1


def test_other_engines_evaluate_export_and_predict_its_run(contract, capsys):
    engine, tmp, out = contract
    run = tmp / "whole"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--engine", "torch"]) == 0  # the neutral weights in another framework
    said = capsys.readouterr().out
    assert f"test_acc {out['final']['test_acc']:.4f}" in said, said
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp / "onnx")]) == 0
    assert json.loads((tmp / "onnx" / "clsf.json").read_text())["trained_with"] == engine
    (tmp / "x.png").write_bytes(png_bytes(np.zeros((10, 10, 3), np.uint8)))
    capsys.readouterr()
    assert main(["predict", str(tmp / "onnx"), str(tmp / "x.png"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"].endswith("x.png")


@pytest.mark.tf
def test_a_process_with_keras_on_tensorflow_refuses_another_backend_in_one_line(tmp_path, capsys):
    import keras  # noqa: F401  (the test process: Keras on TensorFlow)

    code = main(["train", "--engine", "keras-jax", "--data", "synthetic:train=30,test=9,size=8x8x3,classes=3",
                 "--epochs", "1", "--runs-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "cannot switch to jax" in err and "process of its own" in err


def test_a_missing_backend_is_refused_naming_the_extra(monkeypatch):
    import importlib.util

    from clsf.engines import engine_class
    from clsf.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    with pytest.raises(UserError, match=r"jax is not installed; install it with pip install 'clsf\[jax\]'"):
        engine_class("keras-jax")
