"""The model registry: name -> function building a ModelSpec. Tests are parametrised over it, so a
model added here is built, counted, transferred and summarised by every framework test."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from clsf.errors import UserError
from clsf.models.spec import (Activation, BatchNorm, Conv, ConvTranspose, Dense, Dropout, Flatten,
                              GlobalAvgPool, GlobalMaxPool, MaxPool, ModelSpec, Reshape, Residual, Scale,
                              SpecError, validate)


@dataclass(frozen=True)
class Entry:
    build: Callable[..., ModelSpec]
    summary: str


REGISTRY: dict[str, Entry] = {}


def register(name: str, summary: str):
    def deco(fn):
        REGISTRY[name] = Entry(fn, summary)
        return fn

    return deco


@register("seed-cnn", "the classic Keras CIFAR-10 tutorial's CNN: conv32-pool-conv64-pool-dense100-dropout-dense (430,102 params at 32x32x3->10)")
def seed_cnn(num_classes: int = 10, input_shape=(32, 32, 3), widths=(32, 64), dense: int = 100,
             activation: str = "relu", dropout: float = 0.2, output_activation: str = "linear") -> ModelSpec:
    layers = []
    for i, w in enumerate(widths, 1):
        layers += [Conv(f"conv{i}", int(w), 3, padding="same", activation=activation), MaxPool(f"pool{i}", 2)]
    layers += [Flatten("flatten"), Dense("dense1", int(dense), activation=activation)]
    if dropout:
        layers.append(Dropout("dropout", float(dropout)))
    layers.append(Dense("logits", num_classes, activation=output_activation))
    return ModelSpec("seed-cnn", tuple(layers), tuple(input_shape))


@register("mnist-mlp", "784-64-64-10 multilayer perceptron for MNIST")
def mnist_mlp(num_classes: int = 10, input_shape=(28, 28, 1), hidden=(64, 64), activation: str = "relu",
              output_activation: str = "linear") -> ModelSpec:
    layers = [Flatten("flatten")]
    layers += [Dense(f"dense{i}", int(h), activation=activation) for i, h in enumerate(hidden, 1)]
    layers.append(Dense("logits", num_classes, activation=output_activation))
    return ModelSpec("mnist-mlp", tuple(layers), tuple(input_shape))


@register("expert-cnn", "TF 'expert' tutorial CNN: conv32 (valid) - dense128 - dense")
def expert_cnn(num_classes: int = 10, input_shape=(28, 28, 1), output_activation: str = "linear") -> ModelSpec:
    return ModelSpec("expert-cnn", (
        Conv("conv1", 32, 3, padding="valid", activation="relu"),
        Flatten("flatten"),
        Dense("dense1", 128, activation="relu"),
        Dense("logits", num_classes, activation=output_activation),
    ), tuple(input_shape))


@register("eager-cnn", "conv16-conv16-global average pool-dense; accepts any image size")
def eager_cnn(num_classes: int = 10, input_shape=(28, 28, 1)) -> ModelSpec:
    return ModelSpec("eager-cnn", (
        Conv("conv1", 16, 3, padding="valid", activation="relu"),
        Conv("conv2", 16, 3, padding="valid", activation="relu"),
        GlobalAvgPool("gap"),
        Dense("logits", num_classes),
    ), tuple(input_shape))


def _basic_block(name: str, filters: int, stride: int, project: bool) -> Residual:
    body = (
        Conv("conv1", filters, 3, stride, use_bias=False), BatchNorm("bn1"), Activation("relu1", "relu"),
        Conv("conv2", filters, 3, 1, use_bias=False), BatchNorm("bn2"),
    )
    shortcut = (Conv("proj", filters, 1, stride, use_bias=False), BatchNorm("proj_bn")) if project else ()
    return Residual(name, body, shortcut, activation="relu")


@register("resnet-s", "small ResNet (3 stages of 2 basic blocks, 32/64/128 wide, batch norm); 90%+ on CIFAR-10 with enough epochs")
def resnet_s(num_classes: int = 10, input_shape=(32, 32, 3), widths=(32, 64, 128), blocks: int = 2) -> ModelSpec:
    layers = [Conv("stem", int(widths[0]), 3, use_bias=False), BatchNorm("stem_bn"), Activation("stem_relu", "relu")]
    prev = int(widths[0])
    for s, w in enumerate(widths, 1):
        for b in range(1, int(blocks) + 1):
            stride = 2 if (b == 1 and s > 1) else 1
            layers.append(_basic_block(f"s{s}b{b}", int(w), stride, project=(stride != 1 or prev != w)))
            prev = int(w)
    layers += [GlobalAvgPool("gap"), Dense("logits", num_classes)]
    return ModelSpec("resnet-s", tuple(layers), tuple(input_shape))


@register("fast-cnn", "a CIFAR net built for CPU speed: conv-BN stem, three conv-pool-BN-conv-BN blocks (32/64/128), global max pool; 48 MFLOP")
def fast_cnn(num_classes: int = 10, input_shape=(32, 32, 3), widths=(32, 64, 128), stem: int = 24) -> ModelSpec:
    """airbench's shape at a CPU's scale: every block halves the resolution right after its first
    convolution, so the wide layers run on small maps; batch norm after pooling (4x fewer values)."""
    layers = [Conv("stem", int(stem), 3, use_bias=False), BatchNorm("stem_bn"), Activation("stem_relu", "relu")]
    for i, w in enumerate(widths, 1):
        layers += [Conv(f"b{i}_conv1", int(w), 3, use_bias=False), MaxPool(f"b{i}_pool", 2), BatchNorm(f"b{i}_bn1"),
                   Activation(f"b{i}_relu1", "relu"), Conv(f"b{i}_conv2", int(w), 3, use_bias=False),
                   BatchNorm(f"b{i}_bn2"), Activation(f"b{i}_relu2", "relu")]
    layers += [GlobalMaxPool("gmp"), Dense("logits", num_classes)]
    return ModelSpec("fast-cnn", tuple(layers), tuple(input_shape))


@register("airbench", "airbench94's network (Jordan 2024, 94% on CIFAR-10): 2x2 patch-conv stem, three "
                      "conv-pool-BN-GELU-conv-BN-GELU blocks (64/256/256), global max pool; 1.98M params, 0.24 GFLOP a forward pass")
def airbench(num_classes: int = 10, input_shape=(32, 32, 3), widths=(64, 256, 256), stem: int = 24,
             bn_momentum: float = 0.9, bn_epsilon: float = 1e-3, bn_scale: bool = True, bias_scale: float = 1.0,
             dirac: bool = False, logit_scale: float = 1.0, whiten_frozen: bool = False) -> ModelSpec:
    """The network of KellerJordan/cifar10-airbench's airbench94: a 2x2 'valid' convolution over
    pixel patches (24 filters; airbench initialises it by patch whitening), then blocks that halve
    the map right after their first convolution (31 -> 15 -> 7 -> 3), batch norm and GELU, a global
    max pool (airbench's MaxPool(3) on the 3x3 map) and a bias-free linear head.

    The defaults keep clsf's batch norm (momentum 0.9, epsilon 1e-3, learned scale); airbench's own:
    bn_momentum=0.4 (its torch momentum 0.6), bn_epsilon=1e-12, bn_scale=false (scale fixed at 1),
    bias_scale=8 (its 64x learning rate for batch-norm biases, as a reparametrisation), dirac=true
    (each block's convolutions start as a partial identity), logit_scale=0.111 (logits times 1/9),
    whiten_frozen=true (the stem's kernel, set by model.whiten_init, does not train; its bias does)."""
    def bn(name):
        return BatchNorm(name, float(bn_momentum), float(bn_epsilon), bool(bn_scale), float(bias_scale))

    layers = [Conv("whiten", int(stem), 2, padding="valid", frozen=bool(whiten_frozen)), Activation("whiten_gelu", "gelu")]
    for i, w in enumerate(widths, 1):
        layers += [Conv(f"b{i}_conv1", int(w), 3, use_bias=False, dirac=bool(dirac)), MaxPool(f"b{i}_pool", 2),
                   bn(f"b{i}_bn1"), Activation(f"b{i}_gelu1", "gelu"),
                   Conv(f"b{i}_conv2", int(w), 3, use_bias=False, dirac=bool(dirac)), bn(f"b{i}_bn2"),
                   Activation(f"b{i}_gelu2", "gelu")]
    layers += [GlobalMaxPool("gmp"), Dense("logits", num_classes, use_bias=False)]
    if logit_scale != 1:
        layers.append(Scale("logit_scale", float(logit_scale)))
    return ModelSpec("airbench", tuple(layers), tuple(input_shape))


from clsf.models import backbones  # noqa: E402 - the ImageNet backbones, registered beside the CIFAR networks

register("efficientnet-lite0", "EfficientNet-Lite0 (TensorFlow's layout: same padding, relu6; 4.7M params, 0.77 GFLOP at "
                               "224 px); ImageNet weights: model.pretrained=imagenet")(backbones.efficientnet_lite0)
register("mobilenet-v2", "MobileNetV2 (torchvision's layout; keras.applications' with padding=same, bn_epsilon=0.001; "
                         "3.5M params, 0.6 GFLOP at 224 px)")(backbones.mobilenet_v2)
register("resnet-18", "ResNet-18 (torchvision's layout; 11.7M params, 3.6 GFLOP at 224 px)")(backbones.resnet_18)
register("resnet-50", "ResNet-50 (torchvision's v1.5 layout; keras.applications' with stride_in_1x1, conv_bias, "
                      "bn_epsilon=1.001e-5; 25.6M params, 8.2 GFLOP at 224 px)")(backbones.resnet_50)


@register("gan-generator", "MNIST GAN generator: latent 128 -> dense 7x7x128 -> 2 transposed convs -> 28x28x1 sigmoid")
def gan_generator(num_classes: int = 1, input_shape=(128,)) -> ModelSpec:
    return ModelSpec("gan-generator", (
        Dense("dense", 7 * 7 * 128, activation="leaky_relu"),
        Reshape("reshape", (7, 7, 128)),
        ConvTranspose("up1", 128, 4, 2, activation="leaky_relu"),
        ConvTranspose("up2", 128, 4, 2, activation="leaky_relu"),
        Conv("image", 1, 7, padding="same", activation="sigmoid"),
    ), tuple(input_shape), kind="generator")


@register("gan-discriminator", "MNIST GAN discriminator: 2 stride-2 convs (leaky relu) -> global max pool -> dense 1 logit")
def gan_discriminator(num_classes: int = 1, input_shape=(28, 28, 1)) -> ModelSpec:
    return ModelSpec("gan-discriminator", (
        Conv("conv1", 64, 3, 2, activation="leaky_relu"),
        Conv("conv2", 128, 3, 2, activation="leaky_relu"),
        GlobalMaxPool("gmp"),
        Dense("logit", 1),
    ), tuple(input_shape), kind="discriminator")


def names() -> list[str]:
    """The zoo's model names, in registry order (`clsf models list` adds parameter counts)."""
    return list(REGISTRY)


def get_spec(name: str, num_classes: int | None = None, input_shape=None, init: str | None = None, **overrides) -> ModelSpec:
    """Build the registered spec, or the spec a YAML file describes; `overrides` are the model
    function's keyword arguments (registry models only)."""
    from clsf.models.yaml_spec import is_spec_file, load_spec_file

    if is_spec_file(name):
        if overrides:
            raise UserError(f"model.args ({', '.join(overrides)}) apply to registered models; edit {name} instead.")
        spec = load_spec_file(name, 10 if num_classes is None else num_classes, input_shape)
        if init:
            from dataclasses import replace

            spec = replace(spec, init=init)
        return spec
    if name not in REGISTRY:
        raise UserError(f"unknown model '{name}'; choose one of {', '.join(REGISTRY)} (see `clsf models list`) or give a YAML model file.")
    fn = REGISTRY[name].build
    params = inspect.signature(fn).parameters
    bad = [k for k in overrides if k not in params]
    if bad:
        allowed = [k for k in params if k not in ("num_classes", "input_shape")]
        raise UserError(f"model '{name}' has no option {', '.join(bad)}; its options are: {', '.join(allowed) or 'none'}.")
    kwargs = dict(overrides)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    try:
        spec = fn(**kwargs)
        if init:
            from dataclasses import replace

            spec = replace(spec, init=init)
        validate(spec)
    except (SpecError, TypeError, ValueError) as e:
        raise UserError(f"model '{name}' cannot be built as configured: {e}.") from None
    return spec
