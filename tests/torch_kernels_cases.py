"""keras-torch's convolution and max pool (clsf.engines.torch_kernels), the cases: the same outputs and
gradients, bit for bit, as Keras' own torch functions for every kernel size, stride, padding and
grouping a spec can ask for, with no copy of the map; CLSF_KERAS_TORCH_COPIES=1 keeps Keras' own.

Not collected by the suite's own process: Keras picks its backend at import, and the suite's Keras is
TensorFlow's. test_torch_kernels.py runs this file in a process of its own with KERAS_BACKEND=torch."""

import os

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install -e '.[torch]'")
if os.environ.get("KERAS_BACKEND") != "torch":
    pytest.skip("run by test_torch_kernels.py with KERAS_BACKEND=torch", allow_module_level=True)
pytestmark = pytest.mark.torch

CONVS = [  # (kernel, stride, padding, input size, channels in, channels out, groups, dilation)
    (3, 1, "same", 9, 3, 5, 1, 1), (3, 2, "same", 9, 3, 5, 1, 1), (2, 1, "valid", 8, 4, 6, 1, 1),
    (3, 2, "valid", 10, 4, 6, 1, 1), (1, 1, "valid", 7, 5, 2, 1, 1), (5, 1, "same", 8, 3, 4, 1, 1),
    (4, 2, "same", 9, 3, 4, 1, 1),  # even kernel, odd map, stride 2: asymmetric pads, the map padded
    (1, 2, "same", 8, 8, 3, 1, 1),  # 8 in: with fewer, oneDNN's own gradient is wrong (models/keras.py, subsample_class)
    (3, 1, "same", 8, 4, 6, 2, 1), (3, 1, "same", 8, 4, 4, 4, 1),  # grouped, depthwise
    (3, 1, "same", 9, 3, 4, 1, 2), (3, 1, "valid", 9, 3, 4, 1, 2),  # dilated
]
POOLS = [(2, None, "valid", 8), (2, 2, "valid", 9), (3, 2, "valid", 9), (3, 2, "same", 8), (2, 1, "same", 7), (3, 3, "same", 8)]


@pytest.fixture
def installed(monkeypatch):
    """{name: (Keras' own torch function, clsf's)}, clsf's installed for the test only."""
    from keras.src.backend.torch import nn

    from clsf.engines import torch_kernels

    monkeypatch.delenv(torch_kernels.KEEP_KERAS, raising=False)
    monkeypatch.setattr(torch_kernels, "_ORIGINAL", {})
    for name in torch_kernels.REPLACED:
        monkeypatch.setattr(nn, name, getattr(nn, name))  # restored after the test
    own = {name: getattr(nn, name) for name in torch_kernels.REPLACED}
    assert torch_kernels.install() and torch_kernels.installed()
    return {name: (own[name], getattr(nn, name)) for name in own}


def run(fn, *tensors):
    """fn's output and the gradients of a loss unlike it, for each tensor."""
    import torch

    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    y = fn(*leaves)
    torch.sin(y).sum().backward()
    return y.detach(), *[t.grad for t in leaves]


def same_bits(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


@pytest.mark.parametrize("kernel,stride,padding,size,c_in,c_out,groups,dilation", CONVS)
def test_a_convolution_is_keras_own_bit_for_bit(installed, kernel, stride, padding, size, c_in, c_out, groups, dilation):
    import torch

    own, clsf = installed["conv"]
    g = torch.Generator().manual_seed(kernel * 10 + stride)
    x = torch.randn(3, size, size, c_in, generator=g)
    w = torch.randn(kernel, kernel, c_in // groups, c_out, generator=g)
    ref = run(lambda x, w: own(x, w, stride, padding, None, dilation), x, w)
    got = run(lambda x, w: clsf(x, w, stride, padding, None, dilation), x, w)
    assert got[0].is_contiguous()  # NHWC for the next layer, without a copy
    for a, b in zip(ref, got):  # output, the input's gradient, the kernel's gradient
        assert same_bits(a, b), float((a - b).abs().max()) if a.shape == b.shape else (a.shape, b.shape)
    if kernel > 1:  # the teeth: the kernel read flipped is not the same
        flipped = run(lambda x, w: clsf(x, torch.flip(w, (0, 1)), stride, padding, None, dilation), x, w)
        assert not same_bits(ref[0], flipped[0])


@pytest.mark.parametrize("pool,stride,padding,size", POOLS)
def test_a_max_pool_is_keras_own_bit_for_bit_ties_included(installed, pool, stride, padding, size):
    import torch

    own, clsf = installed["max_pool"]
    g = torch.Generator().manual_seed(size + pool)
    x = torch.randint(0, 3, (2, size, size, 5), generator=g).float()  # three values: windows with ties
    ref, got = run(lambda x: own(x, pool, stride, padding), x), run(lambda x: clsf(x, pool, stride, padding), x)
    assert got[0].is_contiguous()
    for a, b in zip(ref, got):
        assert same_bits(a, b)
    shifted = run(lambda x: clsf(x[:, 1:], pool, stride, padding), x)  # the teeth: another map pools otherwise
    assert not same_bits(ref[0][:, : shifted[0].shape[1]], shifted[0]) or not same_bits(ref[1], shifted[1])


def test_what_it_does_not_cover_goes_to_keras_unchanged(installed):
    import torch

    from clsf.engines import torch_kernels

    calls = []
    for name in torch_kernels.REPLACED:
        own = installed[name][0]
        torch_kernels._ORIGINAL[name] = lambda *a, own=own: calls.append(a) or own(*a)
    x = torch.randn(2, 8, 8, 4)
    torch_kernels.conv(x, torch.ones(3, 3, 8, 4), 1, "same", "channels_first")
    torch_kernels.conv(x[..., 0], torch.ones(3, 8, 4), 1, "same")  # 1-D
    torch_kernels.max_pool(x, 2, 2, "valid", "channels_first")
    torch_kernels.max_pool(x[..., 0], 2, 2)  # 1-D
    assert len(calls) == 4
    torch_kernels.conv(x, torch.ones(3, 3, 4, 4), 1, "same")
    torch_kernels.max_pool(x, 2, 2)
    assert len(calls) == 4


def test_the_layers_of_a_keras_model_call_them(installed):
    import keras

    calls = []
    for name, (_, clsf) in installed.items():
        setattr(keras.src.backend.torch.nn, name, lambda *a, clsf=clsf, **k: calls.append(1) or clsf(*a, **k))
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.DepthwiseConv2D(3), keras.layers.MaxPooling2D()])
    assert model(np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 3, 3, 4)
    assert len(calls) == 3


def test_the_switch_keeps_keras_own(monkeypatch):
    from keras.src.backend.torch import nn

    from clsf.engines import torch_kernels

    monkeypatch.setenv(torch_kernels.KEEP_KERAS, "1")
    monkeypatch.setattr(torch_kernels, "_ORIGINAL", {})
    for name in torch_kernels.REPLACED:
        monkeypatch.setattr(nn, name, getattr(nn, name))
    assert not torch_kernels.install() and not torch_kernels.installed()
