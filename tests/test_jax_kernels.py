"""keras-jax's convolution and max pool (clsf.engines.jax_kernels): the same outputs and gradients as
Keras' own JAX functions (jax_kernels_cases.py, in a process of its own: JAX's threads must not meet a
later test's fork), and the keras-jax engine puts them in place on the CPU."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.jax, pytest.mark.skipif(importlib.util.find_spec("jax") is None,  # not imported here
                                                   reason="needs the jax extra: pip install -e '.[jax]'")]
HERE = Path(__file__).parent


@pytest.mark.long  # an equivalence, ~40 s: CI's second step; the engine test below stays in the default suite
def test_the_same_outputs_and_gradients_as_keras_own_in_a_process_of_their_own():
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "jax_kernels_cases.py")],
                       capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-1000:]


def test_the_keras_jax_engine_puts_it_in_place_on_the_cpu(tmp_path):
    """In a process of its own, as clsf runs keras-jax: one epoch trains, and env.json names the gradient."""
    env = dict(os.environ)
    env.pop("CLSF_XLA_GRADIENTS", None)
    cmd = [sys.executable, "-m", "clsf", "train", "--engine", "keras-jax", "--epochs", "1", "--quiet",
           "--data", "synthetic:train=40,test=20,size=8x8x3,classes=2", "--runs-dir", str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads(next(tmp_path.rglob("env.json")).read_text())
    from clsf.engines import jax_kernels  # imports no framework

    knows = jax_kernels._jaxlib_knows(jax_kernels.YNN_FLAG.encode())  # jaxlib 0.10 does; a later one may not
    assert (jax_kernels.NO_YNN_CONVS in meta["jax"]["xla_flags"].split()) == knows
    # XLA's own convolutions: their kernel gradient stays XLA's; YNNPACK's: clsf's
    assert meta["jax"]["conv_pool_gradients"] == {"conv": "xla" if knows else "clsf", "max_pool": "clsf"}


def test_the_engine_keeps_convolutions_out_of_ynnpack_where_jaxlib_knows_the_flag(monkeypatch):
    from clsf.engines import jax_kernels

    assert jax_kernels._jaxlib_knows(b"XLA_FLAGS")  # the variable XLA reads its flags from, in every jaxlib
    assert not jax_kernels._jaxlib_knows(b"XLA_FLAGS", b"xla_cpu_no_such_flag_" + b"anywhere")
    monkeypatch.setattr(jax_kernels, "_jaxlib_knows", lambda *names: True)
    assert jax_kernels.xla_flags("") == jax_kernels.NO_YNN_CONVS
    assert jax_kernels.xla_flags("--xla_cpu_enable_fast_math=false") == f"--xla_cpu_enable_fast_math=false {jax_kernels.NO_YNN_CONVS}"
    once = jax_kernels.xla_flags("")
    assert jax_kernels.xla_flags(once) == once  # placed twice, named once
    own = f"--{jax_kernels.YNN_FLAG}=+individual_convolution"
    assert jax_kernels.xla_flags(own) == own  # the user's setting wins
    monkeypatch.setattr(jax_kernels, "_jaxlib_knows", lambda *names: False)
    assert jax_kernels.xla_flags("--xla_cpu_enable_fast_math=false") == "--xla_cpu_enable_fast_math=false"  # XLA would stop


def test_which_convolutions_xla_runs_is_read_from_its_flags():
    from clsf.engines import jax_kernels

    flag = f"--{jax_kernels.YNN_FLAG}"
    assert jax_kernels.eigen_convolutions(jax_kernels.NO_YNN_CONVS)
    assert jax_kernels.eigen_convolutions(f"--xla_cpu_enable_fast_math=false {flag}=-individual_dot,-individual_convolution")
    assert not jax_kernels.eigen_convolutions("")  # XLA's default: YNNPACK's
    assert not jax_kernels.eigen_convolutions(f"{flag}=-individual_dot")
    assert not jax_kernels.eigen_convolutions(f"{flag}=+individual_convolution")
    assert not jax_kernels.eigen_convolutions(f"{jax_kernels.NO_YNN_CONVS} {flag}=+individual_convolution")  # the last wins
