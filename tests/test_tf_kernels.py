"""The tf engines' batch norm, TensorFlow's fused kernel in place of Keras' separate ops
(clsf.engines.tf_kernels.batch_norm_call): the same output, gradients and moving statistics as Keras'
own in each of TensorFlow's CPU kernel sets (tf_kernels_cases.py, in a process of its own for each:
TensorFlow picks oneDNN or Eigen at import), and the tf engines put it in place on a CPU."""

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


@pytest.mark.parametrize("onednn", ["1", "0"], ids=["onednn", "eigen"])
def test_the_same_outputs_gradients_and_statistics_as_keras_own(onednn):
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "KERAS_BACKEND": "tensorflow"}
    env.pop("CLSF_KERAS_TF_BATCH_NORM", None)
    r = subprocess.run([sys.executable, str(HERE / "tf_kernels_cases.py")], env=env, capture_output=True, text=True,
                       timeout=600, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert f"oneDNN: {onednn == '1'}" in r.stdout, r.stdout[:500]  # the kernel set asked for is the one tested
    assert sum(line.startswith("ok ") for line in r.stdout.splitlines()) == 48, r.stdout[-2000:]


@pytest.mark.parametrize("keep, named", [(None, "fused"), ("1", "keras")])
def test_the_tf_engine_puts_it_in_place_and_says_so(tiny_run, monkeypatch, keep, named):
    """env.json names the batch norm the run computed with; CLSF_KERAS_TF_BATCH_NORM=1 keeps Keras' own."""
    from keras.src.layers.normalization.batch_normalization import BatchNormalization

    from clsf.engines import tf_kernels

    monkeypatch.setattr(BatchNormalization, "call", tf_kernels._ORIGINAL.get("call", BatchNormalization.call))
    monkeypatch.setattr(tf_kernels, "_ORIGINAL", {})  # both restored after the test
    if keep:
        monkeypatch.setenv(tf_kernels.KEEP_KERAS_BN, keep)
    else:
        monkeypatch.delenv(tf_kernels.KEEP_KERAS_BN, raising=False)
    run = tiny_run("tf", "model.name=fast-cnn", "model.args.widths=[8, 8, 8]", small=[], epochs=1)
    assert json.loads((run / "env.json").read_text())["batch_norm"] == named
