"""optim.muon_lr (clsf.techniques.muon): the Newton-Schulz iteration does what it is for, each
framework's step is the numpy reference's on its own kernel layout, and the engines take the same
steps through their own training loops (keras, tf and torch; keras-jax and keras-torch in their
own processes; both under -m long)."""

from __future__ import annotations

import numpy as np
import pytest

from clsf.techniques import muon

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(8, 36), (36, 8), (16, 16)])
def test_the_iteration_brings_the_singular_values_near_one(shape):
    k = min(shape)
    u, _ = np.linalg.qr(RNG.normal(size=(shape[0], k)))
    v, _ = np.linalg.qr(RNG.normal(size=(shape[1], k)))
    g = ((u * np.logspace(0, -1.3, k) * 50) @ v.T).astype(np.float32)  # singular values from 50 down to 2.5
    s = np.linalg.svd(muon.orthogonalize(g, np.matmul, np.transpose, np.linalg.norm), compute_uv=False)
    # airbench94_muon's three steps leave them in roughly (0.5, 1.5), not exactly one (a singular value
    # under ~1/40 of the matrix's norm would stay small: three steps lift it ~40x)
    assert s.min() > 0.6 and s.max() < 1.25, s


def test_orientation_and_column_order_do_not_change_the_result():
    """Why each framework may step its own kernel layout: the transpose's result is the result's
    transpose, and reordered columns give the same columns reordered."""
    g = RNG.normal(size=(8, 36)).astype(np.float64)
    ortho = lambda m: muon.orthogonalize(m, np.matmul, np.transpose, np.linalg.norm)  # noqa: E731
    np.testing.assert_allclose(ortho(g.T), ortho(g).T, rtol=1e-10, atol=1e-12)
    order = RNG.permutation(36)
    np.testing.assert_allclose(ortho(g[:, order]), ortho(g)[:, order], rtol=1e-10, atol=1e-12)
    # the teeth: rows scaled apart (not a reordering) give another matrix
    assert np.abs(ortho(g * np.arange(1, 9)[:, None]) - ortho(g)).max() > 1e-2


def _kernel_case():
    w = RNG.normal(size=(6, 4, 3, 3)).astype(np.float32)  # torch's layout: out, in, kh, kw
    g = RNG.normal(size=w.shape).astype(np.float32)
    buf = RNG.normal(size=w.shape).astype(np.float32) * 0.1
    return w, g, buf


def _reference(w, g, buf, lr=0.1, m=0.6):
    for _ in range(2):  # two steps: the buffer carries over
        w, buf = muon.step_np(w, g, buf, lr, m)
    return w, buf


def test_the_reference_keeps_the_kernel_norm_and_moves_it():
    w, g, buf = _kernel_case()
    w2, _ = muon.step_np(w, g, buf, 0.0, 0.6)
    assert np.isclose(np.linalg.norm(w2), np.sqrt(6), rtol=1e-5)  # renormalised to sqrt(out)
    w3, _ = muon.step_np(w, g, buf, 0.1, 0.6)
    assert np.abs(w3 - w2).max() > 1e-3


@pytest.mark.torch
@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_step_is_the_reference(channels_last):
    import torch

    w, g, buf = _kernel_case()
    want_w, want_buf = _reference(w, g, buf)
    p, tb = torch.tensor(w), torch.tensor(buf)
    if channels_last:
        p = p.to(memory_format=torch.channels_last)
    for _ in range(2):
        muon.step_torch(p, torch.tensor(g), tb, 0.1, 0.6)
    np.testing.assert_allclose(p.numpy(), want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tb.numpy(), want_buf, rtol=1e-6)


@pytest.mark.tf
def test_keras_step_is_the_reference_on_keras_layout():
    """The Keras form steps a (kh, kw, in, out) kernel inside a Keras optimizer; the other variable
    takes the base rule (plain SGD here) and the kernel's buffer is its own."""
    import keras

    w, g, buf = _kernel_case()
    want_w, _ = _reference(w, g, np.zeros_like(buf))
    to_keras = lambda a: np.transpose(a, (2, 3, 1, 0))  # noqa: E731
    kernel, bias = keras.Variable(to_keras(w)), keras.Variable(np.ones(6, np.float32))
    opt = muon.keras_class(keras.optimizers.SGD, ratio=0.5, momentum=0.6)(learning_rate=0.2)
    for _ in range(2):
        opt.apply([to_keras(g), np.full(6, 2.0, np.float32)], [kernel, bias])
    np.testing.assert_allclose(kernel.numpy(), to_keras(want_w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), 1 - 2 * 0.2 * 2.0, rtol=1e-6)


MUON = ["optim.muon_lr=0.05", "optim.muon_momentum=0.7"]


def _muon_runs():
    """test_parity's plan for airbench94's options under Nesterov SGD, one-cycle, decay, clipping and
    smoothing -- one step held to 1e-5, then 24 steps to 1e-1 of the whole -- with Muon on."""
    from test_parity import plan

    return [{**run, "overrides": run["overrides"] + MUON} for run in plan("airbench94", "sgd-nesterov", "onecycle", True)]


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.long  # an equivalence (15 s), in CI's second step: the default suite keeps under 12 minutes
def test_every_engine_takes_the_same_muon_steps():
    """airbench94's network options (batch norm, scaled biases, a frozen stem) with Muon on its
    block kernels and Nesterov SGD on the rest: keras, tf and torch from the same weights and
    batches end on the same weights. The teeth: torch with Muon off, or with its kernels' momentum
    changed, is caught by the same comparison."""
    from test_parity import X, Y, assert_same_weights, compare, train_case, train_engines

    for i, run in enumerate(_muon_runs()):
        n = run["n"]
        got = train_engines(("keras", "tf", "torch"), run["overrides"], run["epochs"], X[:n], Y[:n])
        assert_same_weights(got["keras"][0], got["tf"][0], abs_=1e-6)
        compare(got["keras"][0], got["torch"][0], run)
        base = [o for o in run["overrides"] if not o.startswith("optim.muon")]
        other = base if i == 0 else base + ["optim.muon_lr=0.05", "optim.muon_momentum=0.0"]
        off = train_case("torch", other, run["epochs"], X[:n], Y[:n], got["initial"])[0]
        with pytest.raises(AssertionError, match="difference"):
            compare(got["keras"][0], off, run)


@pytest.mark.jax
@pytest.mark.long
def test_keras_on_jax_and_on_torch_take_the_same_muon_steps(tmp_path):
    """The same runs through keras-jax and keras-torch, each in its own process, against keras."""
    from test_parity import BACKENDS, X, Y, compare, run_backends, train_engines

    runs = {}
    for i, run in enumerate(_muon_runs()):
        got = train_engines(("keras",), run["overrides"], run["epochs"], X[:run["n"]], Y[:run["n"]])
        runs[f"muon-{i}"] = (run, got["initial"], got["keras"][0])
    got = run_backends(BACKENDS, runs, tmp_path)
    for engine in BACKENDS:
        for key, (run, _, ref) in runs.items():
            compare(ref, got[engine][key], run)
