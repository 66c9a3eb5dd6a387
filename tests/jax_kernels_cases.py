"""keras-jax's convolution and max pool (clsf.engines.jax_kernels), the cases: the same outputs and gradients as
Keras' own JAX functions for every kernel size, stride and padding a spec can ask for, the kernel
gradient computed as matmuls and a tiling pool's as a reshape, and CLSF_XLA_GRADIENTS=1 keeps
XLA's.

Not collected by the suite's own process: JAX starts threads, and a later test's fork (a data
loader's workers) could then deadlock. test_jax_kernels.py runs this file in a process of its own."""

import numpy as np
import pytest

pytest.importorskip("jax", reason="needs the jax extra: pip install -e '.[jax]'")
pytestmark = pytest.mark.jax

CASES = [  # (kernel, stride, padding, input size, channels in, channels out)
    (3, 1, "same", 9, 3, 5), (3, 2, "same", 9, 3, 5), (2, 1, "valid", 8, 4, 6), (3, 2, "valid", 10, 4, 6),
    (1, 1, "valid", 7, 5, 2), (5, 1, "same", 8, 3, 4), (4, 2, "same", 9, 3, 4), (1, 2, "same", 8, 4, 3),
]


@pytest.fixture
def installed(monkeypatch):
    """{name: (Keras' own JAX function, clsf's)}, clsf's installed for the test only."""
    from keras.src.backend.jax import nn

    from clsf.engines import jax_kernels

    monkeypatch.delenv(jax_kernels.KEEP_XLA, raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # YNNPACK's convolutions (XLA's default): both replaced
    monkeypatch.setattr(jax_kernels, "_ORIGINAL", {})
    for name in jax_kernels.REPLACED:
        monkeypatch.setattr(nn, name, getattr(nn, name))  # restored after the test
    own = {name: getattr(nn, name) for name in jax_kernels.REPLACED}
    assert jax_kernels.install() and jax_kernels.installed()
    return {name: (own[name], getattr(nn, name)) for name in own}


@pytest.fixture
def convs(installed):
    return installed["conv"]


def grads(conv, x, w, stride, padding):
    import jax
    import jax.numpy as jnp

    loss = lambda x, w: jnp.sum(jnp.sin(conv(x, w, stride, padding)))  # noqa: E731  a gradient unlike the output
    return conv(x, w, stride, padding), *jax.grad(loss, argnums=(0, 1))(x, w)


def relative(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))) / np.max(np.abs(np.asarray(a))))


@pytest.mark.parametrize("kernel,stride,padding,size,c_in,c_out", CASES)
def test_the_same_output_and_gradients_as_keras_own(convs, kernel, stride, padding, size, c_in, c_out):
    import jax.numpy as jnp

    rng = np.random.default_rng(kernel * 10 + stride)
    x = jnp.asarray(rng.normal(size=(3, size, size, c_in)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(kernel, kernel, c_in, c_out)).astype(np.float32))
    (y0, dx0, dw0), (y1, dx1, dw1) = grads(convs[0], x, w, stride, padding), grads(convs[1], x, w, stride, padding)
    assert y1.shape == y0.shape and float(jnp.max(jnp.abs(y1 - y0))) == 0.0  # the forward pass is XLA's own
    assert float(jnp.max(jnp.abs(dx1 - dx0))) == 0.0  # so is the input's gradient
    assert dw1.shape == dw0.shape and relative(dw0, dw1) < 1e-5, relative(dw0, dw1)  # fp32 sums in another order
    if kernel > 1:  # the teeth: taps read in the wrong order (the kernel flipped) are far outside that
        assert relative(dw0, dw1[::-1, ::-1]) > 1e-2


@pytest.mark.parametrize("batch,stride", [(8, 1), (7, 1), (7, 2)])
def test_a_kernel_gradient_summed_chunk_by_chunk_is_the_same(convs, monkeypatch, batch, stride):
    """A batch bigger than CHUNK_ROWS output positions sums its kernel gradient a chunk at a time: two
    images a chunk here, and for batches of 7 a rest of one image added at the end."""
    import jax
    import jax.numpy as jnp

    from clsf.engines import jax_kernels

    rng = np.random.default_rng(batch + stride)
    x = jnp.asarray(rng.normal(size=(batch, 8, 8, 4)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)).astype(np.float32))
    side = 8 // stride
    monkeypatch.setattr(jax_kernels, "CHUNK_ROWS", 2 * side * side)
    (_, dx0, dw0), (_, dx1, dw1) = grads(convs[0], x, w, stride, "same"), grads(convs[1], x, w, stride, "same")
    assert float(jnp.max(jnp.abs(dx1 - dx0))) == 0.0
    assert relative(dw0, dw1) < 1e-5, relative(dw0, dw1)
    loss = lambda w: jnp.sum(convs[1](x, w, stride, "same"))  # noqa: E731
    assert " scan[" in str(jax.make_jaxpr(jax.grad(loss))(w))  # and it did go chunk by chunk


def test_bf16_kernels_get_bf16_gradients_summed_in_fp32(convs):
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(8, 8, 8, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(3, 3, 16, 8)), jnp.bfloat16)
    (_, _, dw0), (_, _, dw1) = grads(convs[0], x, w, 1, "same"), grads(convs[1], x, w, 1, "same")
    assert dw1.dtype == jnp.bfloat16 and relative(dw0, dw1) < 2e-2  # bf16 keeps 8 bits: 2^-8 per entry, x a few


def test_what_it_does_not_cover_goes_to_keras_unchanged(convs):
    import jax.numpy as jnp

    from clsf.engines import jax_kernels

    calls = []
    jax_kernels._ORIGINAL["conv"] = lambda *a: calls.append(a) or convs[0](*a)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)).astype(np.float32))
    jax_kernels.conv(x, jnp.ones((3, 3, 2, 4)), 1, "same")  # grouped: 2 groups of 2 channels
    jax_kernels.conv(x, jnp.ones((3, 3, 4, 4)), 1, "same", dilation_rate=2)
    jax_kernels.conv(x, jnp.ones((3, 3, 8, 4)), 1, "same", data_format="channels_first")
    jax_kernels.conv(x[..., 0], jnp.ones((3, 4, 4)), 1, "same")  # 1-D
    assert len(calls) == 4
    jax_kernels.conv(x, jnp.ones((3, 3, 4, 4)), 1, "same")
    assert len(calls) == 4


POOLS = [  # (window, input height, input width, channels): odd sizes leave a rest row or column
    (2, 8, 8, 3), (2, 9, 7, 4), (3, 9, 10, 2), ((2, 3), 8, 9, 3), (1, 5, 5, 2)]


@pytest.mark.parametrize("window,h,w,c", POOLS)
def test_a_tiling_max_pool_has_the_same_output_and_gradient_bit_for_bit(installed, window, h, w, c):
    """Ties included: the window's first maximum takes the gradient, as XLA's select-and-scatter gives it."""
    import jax
    import jax.numpy as jnp

    x = np.random.default_rng(h * w).normal(size=(2, h, w, c)).astype(np.float32)
    x[:, 0, 1] = x[:, 0, 0]  # a tie in the first window
    x[:, 1, 1] = np.maximum(x[:, 0, 0], x[:, 1, 1])  # and one between rows, where the row-major order decides
    x = jnp.asarray(np.round(x, 1))  # more ties
    ph, pw = (window, window) if isinstance(window, int) else window
    dy = jnp.asarray(np.random.default_rng(1).normal(size=(2, h // ph, w // pw, c)).astype(np.float32))
    got = []
    for pool in installed["max_pool"]:
        y, back = jax.vjp(lambda a: pool(a, window, window, "valid", "channels_last"), x)
        got.append((y, back(dy)[0]))
    (y0, dx0), (y1, dx1) = got
    assert y1.shape == y0.shape and bool(jnp.all(y1 == y0))
    assert bool(jnp.all(dx1 == dx0))
    if window != 1:  # the teeth: the gradient shared among tied maxima (jnp.max's own rule) is not the same
        shared = jax.grad(lambda a: jnp.sum(jnp.max(a[:, :2, :2], axis=(1, 2))))(x)
        first = jax.grad(lambda a: jnp.sum(installed["max_pool"][1](a[:, :2, :2], 2)))(x)
        assert not bool(jnp.all(shared == first))


def test_pools_it_does_not_cover_go_to_keras_unchanged(installed):
    import jax.numpy as jnp

    from clsf.engines import jax_kernels

    calls = []
    jax_kernels._ORIGINAL["max_pool"] = lambda *a: calls.append(a) or installed["max_pool"][0](*a)
    x = jnp.ones((2, 8, 8, 3))
    jax_kernels.max_pool(x, 3, 2)  # overlapping windows
    jax_kernels.max_pool(x, 2, 2, "same")
    jax_kernels.max_pool(x, 2, 2, data_format="channels_first")
    assert len(calls) == 3
    jax_kernels.max_pool(x, 2, 2)
    jax_kernels.max_pool(x, (2, 2))
    assert len(calls) == 3


def test_clsf_xla_conv_grad_keeps_xla_own(monkeypatch):
    from keras.src.backend.jax import nn

    from clsf.engines import jax_kernels

    monkeypatch.setenv(jax_kernels.KEEP_XLA, "1")
    monkeypatch.setattr(jax_kernels, "_ORIGINAL", {})
    for name in jax_kernels.REPLACED:
        monkeypatch.setattr(nn, name, getattr(nn, name))
    assert not jax_kernels.install() and not jax_kernels.installed()


def test_with_xla_own_convolutions_only_the_max_pool_is_replaced(monkeypatch):
    """XLA_FLAGS with NO_YNN_CONVS (as the engine sets them): XLA's own kernel gradient is the faster,
    so the convolution stays Keras' and only the max pool is clsf's."""
    from keras.src.backend.jax import nn

    from clsf.engines import jax_kernels

    monkeypatch.delenv(jax_kernels.KEEP_XLA, raising=False)
    monkeypatch.setenv("XLA_FLAGS", jax_kernels.NO_YNN_CONVS)
    monkeypatch.setattr(jax_kernels, "_ORIGINAL", {})
    own = {name: getattr(nn, name) for name in jax_kernels.REPLACED}
    for name in jax_kernels.REPLACED:
        monkeypatch.setattr(nn, name, own[name])
    assert jax_kernels.install() and jax_kernels.installed()
    assert nn.conv is own["conv"] and nn.max_pool is jax_kernels.max_pool
    assert jax_kernels.gradients() == {"conv": "xla", "max_pool": "clsf"}
