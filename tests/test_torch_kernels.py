"""keras-torch's convolution and max pool (clsf.engines.torch_kernels): the same outputs and gradients,
bit for bit, as Keras' own torch functions (torch_kernels_cases.py, in a process of its own: Keras
picks its backend at import, and this process's Keras is TensorFlow's), and the keras-torch engine
puts them in place."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                                     reason="needs the torch extra: pip install -e '.[torch]'")]
HERE = Path(__file__).parent


@pytest.mark.long  # an equivalence: CI's second step; the engine test below stays in the default suite
def test_the_same_outputs_and_gradients_as_keras_own_in_a_process_of_their_own():
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "torch_kernels_cases.py")],
                       env=env, capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-1000:]


def test_the_keras_torch_engine_puts_it_in_place(tmp_path):
    """In a process of its own, as clsf runs keras-torch: one epoch trains, and env.json names the
    functions its convolutions ran through."""
    env = {k: v for k, v in os.environ.items() if k != "CLSF_KERAS_TORCH_COPIES"}
    cmd = [sys.executable, "-m", "clsf", "train", "--engine", "keras-torch", "--epochs", "1", "--quiet",
           "--data", "synthetic:train=40,test=20,size=8x8x3,classes=2", "--runs-dir", str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads(next(tmp_path.rglob("env.json")).read_text())
    assert meta["torch"]["conv_pool"] == "clsf"
