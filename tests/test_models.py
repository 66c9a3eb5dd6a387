"""Parametrised over the whole registry: a model added to the zoo is tested here automatically."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clsf.errors import UserError
from clsf.models.spec import BatchNorm, forward_flops, output_shape, param_count, walk
from clsf.models.zoo import get_spec, names

pytestmark = [pytest.mark.tf, pytest.mark.torch]
EXAMPLES = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "examples" / "models").glob("*.yaml"))
# airbench with airbench94's own batch norm (no learned scale, scaled biases), dirac init and scaled logits
VARIANTS = {"airbench:airbench94": ("airbench", dict(bn_momentum=0.4, bn_epsilon=1e-12, bn_scale=False, bias_scale=8.0,
                                                     dirac=True, logit_scale=1 / 9))}
MODELS = names() + list(VARIANTS) + EXAMPLES  # the example model files get every registry test too


BACKBONES = ("efficientnet-lite0", "mobilenet-v2", "resnet-18", "resnet-50")  # ImageNet-sized: tested at 67 px, where
# odd sizes meet stride-2 layers (TensorFlow's "same" and PyTorch's padding then differ)


def spec_of(name):
    """A registry model with its defaults (or a variant's options), or an example file built for CIFAR-sized input."""
    if name in VARIANTS:
        return get_spec(VARIANTS[name][0], **VARIANTS[name][1])
    shape = (32, 32, 3) if name.endswith(".yaml") else (67, 67, 3) if name in BACKBONES else None
    return get_spec(name, 10 if name in BACKBONES else None, input_shape=shape)


def _input(spec, n=3, seed=0):
    shape = tuple(20 if d is None else d for d in spec.input_shape)  # "any size" models at 20x20
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype("float32")


def _torch_out(net, x):
    import torch

    with torch.no_grad():
        out = net(torch.from_numpy(x if x.ndim == 2 else x.transpose(0, 3, 1, 2))).numpy()
    return out if out.ndim == 2 else out.transpose(0, 2, 3, 1)


def _randomise_bn(model, spec, rng):
    """Give batch norms non-trivial statistics so their transfer is really exercised."""
    for name, layer in walk(spec.layers):
        if isinstance(layer, BatchNorm):
            for v in model.get_layer(name).weights:  # by name: gamma and beta exist as the spec says
                positive = v.name in ("gamma", "moving_variance")
                v.assign((rng.uniform(0.5, 1.5, v.shape) if positive else rng.normal(0, 0.3, v.shape)).astype("float32"))


def test_spec_and_zoo_import_no_framework():
    code = "import sys, clsf.models.spec, clsf.models.zoo, clsf.models.transfer, clsf.data; " \
           "assert 'tensorflow' not in sys.modules and 'torch' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_seed_cnn_has_the_seeds_parameter_count():
    assert param_count(get_spec("seed-cnn")) == 430_102
    assert param_count(get_spec("mnist-mlp")) == 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10


def test_overrides_and_bad_options():
    wide = get_spec("seed-cnn", widths=(64, 128), dense=256, activation="elu", dropout=0.5)
    assert param_count(wide) > 430_102
    assert get_spec("seed-cnn", dropout=0).layers[-2].name == "dense1"
    with pytest.raises(UserError, match="has no option colour"):
        get_spec("seed-cnn", colour="red")
    with pytest.raises(UserError, match="unknown model"):
        get_spec("vgg99")
    with pytest.raises(UserError, match="activation 'sparkle'"):
        get_spec("seed-cnn", activation="sparkle")


@pytest.mark.parametrize("name", MODELS)
def test_both_builds_agree_on_params_and_shapes(name):
    from clsf.models.keras import build_keras
    from clsf.models.torch import build_torch

    spec = spec_of(name)
    km, tm = build_keras(spec), build_torch(spec).eval()
    torch_count = sum(p.numel() for p in tm.parameters()) + sum(
        b.numel() for k, b in tm.named_buffers() if not k.endswith("num_batches_tracked"))
    assert km.count_params() == torch_count == param_count(spec)
    x = _input(spec)
    expected = tuple(20 if d is None else d for d in output_shape(spec)) if None in spec.input_shape else output_shape(spec)
    assert tuple(km(x, training=False).shape[1:]) == expected
    assert _torch_out(tm, x).shape[1:] == expected


@pytest.mark.parametrize("name", MODELS)
def test_forward_flops_match_torchs_counter(name):
    """The spec's FLOP count (the benchmark's efficiency figures stand on it) equals what torch's
    FlopCounterMode counts when the built model runs one image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from clsf.models.torch import build_torch

    spec = spec_of(name)
    x = _input(spec, n=1)  # one image; "any size" models at 20x20
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        build_torch(spec).eval()(torch.from_numpy(x if x.ndim == 2 else x.transpose(0, 3, 1, 2).copy()))
    assert forward_flops(spec, x.shape[1:]) == counter.get_total_flops() > 0


def test_seed_cnn_flops_by_hand():
    convs = 2 * 32 * 32 * 9 * 3 * 32 + 2 * 16 * 16 * 9 * 32 * 64  # 'same' convs at 32x32 and 16x16
    assert forward_flops(get_spec("seed-cnn")) == convs + 2 * 4096 * 100 + 2 * 100 * 10  # 12.0 MFLOP


@pytest.mark.parametrize("name", MODELS)
def test_weight_transfer_both_ways(name):
    from clsf.models.keras import build_keras
    from clsf.models.torch import build_torch
    from clsf.models.transfer import keras_to_torch, torch_to_keras

    spec = spec_of(name)
    rng = np.random.default_rng(1)
    km = build_keras(spec)
    _randomise_bn(km, spec, rng)
    tm = build_torch(spec).eval()
    keras_to_torch(km, tm, spec)
    x = _input(spec, seed=2)
    assert np.abs(km(x, training=False).numpy() - _torch_out(tm, x)).max() <= 1e-4
    tm2 = build_torch(spec).eval()
    with __import__("torch").no_grad():
        for m in tm2.modules():
            if hasattr(m, "running_var"):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    km2 = build_keras(spec)
    torch_to_keras(tm2, km2, spec)
    assert np.abs(km2(x, training=False).numpy() - _torch_out(tm2, x)).max() <= 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_summary_same_numbers_in_both_frameworks(name):
    from clsf.models.summary import format_summary, summary_rows

    spec = spec_of(name)
    k, t = summary_rows(spec, "keras"), summary_rows(spec, "torch")
    assert [(r[0], r[1], r[3], r[4]) for r in k] == [(r[0], r[1], r[3], r[4]) for r in t]
    assert [r[2] for r in k] == [r[2] for r in t]
    text = format_summary(spec, "torch")
    assert f"total params: {param_count(spec):,}" in text and spec.layers[-1].name in text


@pytest.mark.parametrize("init", ["glorot_uniform", "he_uniform", "torch_default"])
def test_initialisation_has_the_same_distribution(init):
    from clsf.models.keras import build_keras
    from clsf.models.torch import build_torch
    from clsf.models.transfer import keras_weights, torch_weights

    spec = get_spec("seed-cnn", init=init)
    kw, tw = keras_weights(build_keras(spec), spec), torch_weights(build_torch(spec), spec)
    for layer in ("conv2", "dense1"):
        k, t = kw[layer]["kernel"], tw[layer]["kernel"]
        fan_in, fan_out = np.prod(k.shape[:-1]), k.shape[-1] * (np.prod(k.shape[:2]) if k.ndim == 4 else 1)
        limit = {"glorot_uniform": np.sqrt(6 / (fan_in + fan_out)), "he_uniform": np.sqrt(6 / fan_in),
                 "torch_default": 1 / np.sqrt(fan_in)}[init]
        for w in (k, t):
            assert np.abs(w).max() <= limit * (1 + 1e-6)
            assert abs(w.std() - limit / np.sqrt(3)) < 0.03 * limit  # uniform(-l, l) has std l/sqrt(3)
        kb, tb = kw[layer]["bias"], tw[layer]["bias"]
        if init == "torch_default":
            assert np.abs(kb).max() <= 1 / np.sqrt(fan_in) and kb.std() > 0 and tb.std() > 0
        else:
            assert not kb.any() and not tb.any()


def test_torch_eval_turns_dropout_off():
    import torch

    from clsf.models.torch import build_torch

    net = build_torch(get_spec("seed-cnn", dropout=0.5))
    x = torch.from_numpy(_input(get_spec("seed-cnn")).transpose(0, 3, 1, 2))
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


def test_cli_models_list_summary_and_diagram(tmp_path, capsys):
    from clsf.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in names()) and "430,102" in out
    png = tmp_path / "m.png"
    assert main(["models", "summary", "seed-cnn", "--framework", "torch", "--diagram", str(png)]) == 0
    assert "total params: 430,102" in capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["models", "summary", "nope"]) == 2


def test_airbench94_options_mean_the_same_in_both_builders():
    """dirac: filter j < in starts as the identity on channel j (the rest keep the init), alike in
    Keras and torch; bn_scale=false: no gamma anywhere; bias_scale: the layer adds bias_scale * beta
    and beta's gradient is bias_scale times the bias's; logit_scale multiplies the logits."""
    import torch

    from clsf.models.keras import build_keras
    from clsf.models.spec import BatchNorm, ModelSpec, Scale
    from clsf.models.torch import build_torch
    from clsf.models.transfer import keras_weights, torch_weights

    spec = spec_of("airbench:airbench94")
    kw, tw = keras_weights(build_keras(spec), spec), torch_weights(build_torch(spec), spec)
    for w in (kw, tw):
        k = w["b2_conv1"]["kernel"]  # (3, 3, 64, 256): the first 64 filters are identities
        eye = np.zeros((3, 3, 64, 64), np.float32)
        eye[1, 1, np.arange(64), np.arange(64)] = 1
        assert np.array_equal(k[..., :64], eye) and np.abs(k[..., 64:]).std() > 0
        assert "gamma" not in w["b1_bn1"] and set(w["b1_bn1"]) == {"beta", "moving_mean", "moving_variance"}
    plain = get_spec("airbench")  # dirac is off by default
    assert not np.array_equal(keras_weights(build_keras(plain), plain)["b2_conv1"]["kernel"][..., :64], eye)
    assert isinstance(spec.layers[-1], Scale) and spec.layers[-1].factor == pytest.approx(1 / 9)

    one = ModelSpec("bn", (BatchNorm("bn", bias_scale=8.0, scale=False), Scale("s", 0.5)), (4,))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    km, tm = build_keras(one), build_torch(one)
    km.get_layer("bn").beta.assign(np.full(4, 0.25, np.float32))
    with torch.no_grad():
        tm.bn.bias.fill_(0.25)
    expected = 0.5 * (x / np.sqrt(1 + 1e-3) + 8 * 0.25)  # fresh moving statistics: mean 0, variance 1
    np.testing.assert_allclose(km(x, training=False).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(tm.eval()(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-6)
    tm.train()
    tm(torch.from_numpy(x)).sum().backward()
    np.testing.assert_allclose(tm.bn.bias.grad.numpy(), np.full(4, 8 * 0.5 * 6), rtol=1e-6)  # d/d beta = 8 * 0.5 per row
    import tensorflow as tf

    with tf.GradientTape() as tape:
        total = tf.reduce_sum(km(x, training=True))
    np.testing.assert_allclose(tape.gradient(total, km.get_layer("bn").beta).numpy(), np.full(4, 8 * 0.5 * 6), rtol=1e-6)


@pytest.mark.parametrize("act", [a for a in __import__("clsf.models.spec", fromlist=["ACTIVATIONS"]).ACTIVATIONS])
def test_every_activation_means_the_same_in_both_builders(act):
    """relu6, hard_swish and hard_sigmoid included: Keras' and torch's definitions agree on a range that
    crosses each one's corners (-3, 0, 3, 6)."""
    from clsf.models.keras import build_keras
    from clsf.models.spec import Activation, Dense, Flatten, ModelSpec
    from clsf.models.torch import build_torch
    from clsf.models.transfer import keras_to_torch

    spec = ModelSpec("act", (Flatten("flat"), Dense("d", 8), Activation("a", act)), (4, 4, 1))
    km, tm = build_keras(spec), build_torch(spec).eval()
    keras_to_torch(km, tm, spec)
    x = np.linspace(-8, 8, 5 * 16, dtype="float32").reshape(5, 4, 4, 1)
    assert np.abs(km(x, training=False).numpy() - _torch_out(tm, x)).max() <= 1e-5


def test_a_squeeze_excite_block_in_a_model_file_builds_alike(tmp_path):
    """squeeze_excite and depthwise_conv in a YAML model file: both builders, the same function."""
    from clsf.models.keras import build_keras
    from clsf.models.torch import build_torch
    from clsf.models.transfer import keras_to_torch
    from clsf.models.yaml_spec import load_spec_file, spec_to_yaml

    path = tmp_path / "se.yaml"
    path.write_text("layers:\n"
                    "  - {type: conv, name: c1, filters: 8, stride: 2, padding: symmetric}\n"
                    "  - {type: depthwise_conv, name: dw, kernel: 5, stride: 2, multiplier: 2, activation: hard_swish}\n"
                    "  - {type: squeeze_excite, name: se, gate: hard_sigmoid, body: [{type: conv, name: reduce, filters: 4, "
                    "kernel: 1, activation: relu}, {type: conv, name: expand, filters: 16, kernel: 1}]}\n"
                    "  - {type: max_pool, pool: 3, stride: 2, padding: symmetric}\n"
                    "  - {type: global_avg_pool}\n  - {type: dense, name: logits, units: num_classes}\n")
    spec = load_spec_file(path, 3, (15, 15, 3))
    assert [n for n, _ in walk(spec.layers)][2:4] == ["se_reduce", "se_expand"]
    (tmp_path / "again.yaml").write_text(spec_to_yaml(spec))  # written back, it reads as the same network
    assert load_spec_file(tmp_path / "again.yaml", 3, (15, 15, 3)) == spec
    km, tm = build_keras(spec), build_torch(spec).eval()
    keras_to_torch(km, tm, spec)
    x = _input(spec)
    assert np.abs(km(x, training=False).numpy() - _torch_out(tm, x)).max() <= 1e-4


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_a_strided_1x1_convolution_on_few_channels_gets_its_true_gradient_in_channels_last(padding):
    """oneDNN's own strided 1x1 kernel gradient in channels-last memory is wrong (or hangs) for maps
    with fewer channels than its block, 8 on AVX2 (uxlfoundation/oneDNN#6035): 18 of 20 draws wrong
    for 4 channels at 8x8 on an AMD EPYC. The torch build takes every s-th pixel into a stride-1 1x1
    convolution instead; its gradients match float64's every draw, in either memory layout."""
    import torch

    from clsf.models.spec import Conv, Flatten, ModelSpec
    from clsf.models.torch import build_torch

    spec = ModelSpec("strided-1x1", (Conv("c", 8, 1, 2, padding), Flatten("f")), (8, 8, 4))
    net = build_torch(spec)
    ref = build_torch(spec).double()
    ref.load_state_dict(net.state_dict())
    g = torch.Generator().manual_seed(0)
    for draw in range(10):
        x = torch.randn(8, 4, 8, 8, generator=g)
        grads = []
        for model, inp in ((net, x.contiguous(memory_format=torch.channels_last)), (net, x), (ref, x.double())):
            model.zero_grad()
            torch.sin(model(inp)).sum().backward()
            grads.append([p.grad.double().clone() for p in model.parameters()])
        for got in grads[:2]:
            for a, b in zip(got, grads[2]):
                assert torch.allclose(a, b, rtol=1e-5, atol=1e-4), (draw, float((a - b).abs().max()))


def test_no_build_has_a_strided_1x1_convolution_and_both_compute_the_same():
    """Both builders compute a strided 1x1 convolution as every s-th pixel through a stride-1 one (the
    test above says why); the Keras model keeps the layer's name and weights and the torch model's
    outputs on the same weights."""
    import keras

    from clsf.models.keras import build_keras
    from clsf.models.spec import Conv, ModelSpec
    from clsf.models.torch import build_torch
    from clsf.models.transfer import keras_weights, set_torch_weights

    spec = ModelSpec("strided-1x1", (Conv("c", 8, 1, 2, "same"),), (7, 7, 4))
    model = build_keras(spec)
    convs = [lay for lay in model.layers if isinstance(lay, keras.layers.Conv2D)]
    assert [c.name for c in convs] == ["c"] and all(tuple(c.strides) == (1, 1) for c in convs)
    assert model.output_shape == (None, 4, 4, 8)
    net = build_torch(spec)
    set_torch_weights(net, spec, keras_weights(model, spec))
    x = _input(spec)
    assert np.allclose(model.predict(x, verbose=0), _torch_out(net, x), atol=1e-5)


@pytest.mark.long
def test_a_strided_1x1_convolution_on_few_channels_gets_its_true_gradient_in_keras_on_onednn():
    """As the torch test above, through the Keras build on TensorFlow with oneDNN on (a process of its
    own: the suite's run Eigen), against the gradient summed in float64 by numpy. A plain strided
    Conv2D there was wrong in 20 of 20 draws (4 channels in, 8x8, AMD EPYC)."""
    script = r'''
import os
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
import numpy as np, tensorflow as tf
from clsf.models.keras import build_keras
from clsf.models.spec import Conv, Flatten, ModelSpec
for padding in ("same", "valid"):
    model = build_keras(ModelSpec("strided-1x1", (Conv("c", 8, 1, 2, padding), Flatten("f")), (8, 8, 4)))
    kernel, bias = model.get_layer("c").kernel, model.get_layer("c").bias
    rng = np.random.default_rng(0)
    for draw in range(10):
        x = rng.normal(size=(8, 8, 8, 4)).astype(np.float32)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(model(x)))
        got = tape.gradient(loss, kernel).numpy()[0, 0]  # (4 in, 8 out)
        xs = x[:, ::2, ::2, :].astype(np.float64)  # the pixels a 1x1 stride-2 kernel meets
        y = xs @ kernel.numpy()[0, 0].astype(np.float64) + bias.numpy()
        want = np.einsum("nijc,nijo->co", xs, np.cos(y))
        assert np.allclose(got, want, rtol=1e-4, atol=1e-3), (padding, draw, float(np.abs(got - want).max()))
print("ok")
'''
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
