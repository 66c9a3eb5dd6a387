"""The tf engines' batch norm, TensorFlow's fused kernel in place of Keras' separate ops
(clsf.engines.tf_kernels.batch_norm_call), and their exact gelu, one compiled loop each way
(clsf.engines.tf_kernels.gelu): the same outputs, gradients and moving statistics as Keras' own in each
of TensorFlow's CPU kernel sets (tf_kernels_cases.py, in a process of its own for each: TensorFlow picks
oneDNN or Eigen at import); the tf engines put them in place on a CPU and train alike in every tf.mode."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                                  reason="needs the tf extra: pip install -e '.[tf]'")]
HERE = Path(__file__).parent
AIRBENCH = ["model.name=airbench", "model.args.widths=[8, 8]", "model.args.stem=12"]  # batch norm and gelu


@pytest.mark.parametrize("onednn", ["1", "0"], ids=["onednn", "eigen"])
def test_the_same_outputs_gradients_and_statistics_as_keras_own(onednn):
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "KERAS_BACKEND": "tensorflow"}
    env.pop("CLSF_KERAS_TF_BATCH_NORM", None), env.pop("CLSF_KERAS_TF_GELU", None)
    r = subprocess.run([sys.executable, str(HERE / "tf_kernels_cases.py")], env=env, capture_output=True, text=True,
                       timeout=600, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert f"oneDNN: {onednn == '1'}" in r.stdout, r.stdout[:500]  # the kernel set asked for is the one tested
    assert sum(line.startswith("ok ") for line in r.stdout.splitlines()) == 48 + 14, r.stdout[-2000:]


@pytest.mark.parametrize("keep", [None, "CLSF_KERAS_TF_BATCH_NORM", "CLSF_KERAS_TF_GELU"])
def test_the_tf_engine_puts_them_in_place_and_says_so(tiny_run, monkeypatch, keep):
    """env.json names the batch norm and gelu the run computed with; CLSF_KERAS_TF_BATCH_NORM=1 and
    CLSF_KERAS_TF_GELU=1 each keep Keras' own."""
    from keras.src.backend.tensorflow import nn
    from keras.src.layers.normalization.batch_normalization import BatchNormalization

    from clsf.engines import tf_kernels

    monkeypatch.setattr(BatchNormalization, "call", tf_kernels._ORIGINAL.get("call", BatchNormalization.call))
    monkeypatch.setattr(nn, "gelu", tf_kernels._ORIGINAL_NN.get("gelu", nn.gelu))
    monkeypatch.setattr(tf_kernels, "_ORIGINAL", {})  # all restored after the test
    monkeypatch.setattr(tf_kernels, "_ORIGINAL_NN", {})
    for name in (tf_kernels.KEEP_KERAS_BN, tf_kernels.KEEP_KERAS_GELU):
        monkeypatch.delenv(name, raising=False)
    if keep:
        monkeypatch.setenv(keep, "1")
    run = tiny_run("tf", *AIRBENCH, small=[], epochs=1)
    env = json.loads((run / "env.json").read_text())
    assert env["batch_norm"] == ("keras" if keep == tf_kernels.KEEP_KERAS_BN else "fused")
    assert env["gelu"] == ("keras" if keep == tf_kernels.KEEP_KERAS_GELU else "clsf")


@pytest.mark.parametrize("engine", ["tf", "keras"])
def test_the_gelu_trains_alike_eager_in_a_graph_and_under_xla(tiny_run, engine):
    """The compiled gelu called op by op (tf.mode=eager), inside the engine's tf.function (graph) and
    inside an XLA-compiled step (xla): the same training."""
    from clsf.run import rundir

    losses = {mode: [r["train_loss"] for r in rundir.read_metrics(
        tiny_run(engine, *AIRBENCH, f"tf.mode={mode}", small=[], epochs=2, run_name=mode))]
        for mode in ("graph", "eager", "xla")}
    assert losses["eager"] == pytest.approx(losses["graph"], rel=1e-5)
    assert losses["xla"] == pytest.approx(losses["graph"], rel=1e-2)  # XLA fuses the rest: other rounding
