"""A framework-free description of a network. Importing this module imports neither TF nor torch.

A `ModelSpec` is an ordered list of layers; `Residual` nests two such lists (body and shortcut).
Shapes are NHWC throughout the spec (what a user sees and what Keras uses); the torch builder
handles NCHW internally. `infer_shapes` walks the spec once, so both builders, the summary and the
weight transfer agree on every layer's input and output shape without asking a framework.

Padding "same" means TensorFlow's rule: output = ceil(input / stride), with any odd padding put
at the bottom/right. The torch builder reproduces that exactly (plain `padding=1` in torch pads both
sides and shifts the sampling grid of stride-2 convs by a pixel). Padding "symmetric" is PyTorch's
rule, `padding=(kernel - 1) // 2` on every side, which networks ported from PyTorch (torchvision's)
use; the Keras builder reproduces it with explicit padding. The two differ at stride 2 on even sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Union

ACTIVATIONS = ("linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "gelu", "elu", "swish", "relu6",
               "hard_swish", "hard_sigmoid")
PADDINGS = ("same", "valid", "symmetric")
INITS = ("glorot_uniform", "he_uniform", "torch_default")


@dataclass(frozen=True)
class Conv:
    name: str
    filters: int
    kernel: int = 3
    stride: int = 1
    padding: str = "same"  # "same" | "valid"
    activation: str = "linear"
    use_bias: bool = True
    alpha: float = 0.2  # leaky_relu negative slope (Keras' default is 0.3, torch's 0.01: be explicit)
    l1: float = 0.0  # kernel regulariser added to the loss: l1 * sum|W| + l2 * sum(W^2) (Keras' L1L2)
    l2: float = 0.0
    dirac: bool = False  # filter j < input channels starts as the identity on channel j (airbench); see `dirac`
    frozen: bool = False  # the kernel keeps its initial (or loaded) values; the bias trains (airbench's whitening layer)


@dataclass(frozen=True)
class DepthwiseConv:
    """One `kernel` x `kernel` filter per input channel (`multiplier` of them): MobileNet's and
    EfficientNet's spatial convolution. Output channels: input channels x multiplier."""

    name: str
    kernel: int = 3
    stride: int = 1
    padding: str = "same"  # "same" | "valid" | "symmetric"
    activation: str = "linear"
    use_bias: bool = False
    multiplier: int = 1
    alpha: float = 0.2


@dataclass(frozen=True)
class ConvTranspose:
    name: str
    filters: int
    kernel: int = 4
    stride: int = 2
    padding: str = "same"  # "same": output = input * stride
    activation: str = "linear"
    use_bias: bool = True
    alpha: float = 0.2


@dataclass(frozen=True)
class Dense:
    name: str
    units: int
    activation: str = "linear"
    use_bias: bool = True
    alpha: float = 0.2
    l1: float = 0.0  # kernel regulariser, as for Conv
    l2: float = 0.0


@dataclass(frozen=True)
class ActivityPenalty:
    """The add_loss example layer: passes its input through and adds rate * sum(input) to the loss."""

    name: str
    rate: float


@dataclass(frozen=True)
class MaxPool:
    name: str
    pool: int = 2
    stride: int = 0  # 0: the pool size (windows side by side)
    padding: str = "valid"  # "valid" | "same" | "symmetric" (padded with -inf: padding never wins a max)


@dataclass(frozen=True)
class AvgPool:
    name: str
    pool: int = 2


@dataclass(frozen=True)
class GlobalAvgPool:
    name: str


@dataclass(frozen=True)
class GlobalMaxPool:
    name: str


@dataclass(frozen=True)
class Flatten:
    name: str


@dataclass(frozen=True)
class Reshape:
    name: str
    shape: tuple[int, int, int]  # (H, W, C)


@dataclass(frozen=True)
class Dropout:
    name: str
    rate: float


@dataclass(frozen=True)
class BatchNorm:
    name: str
    momentum: float = 0.9  # Keras meaning: moving = momentum * moving + (1 - momentum) * batch
    epsilon: float = 1e-3
    scale: bool = True  # False: no learned scale (gamma fixed at 1, as airbench)
    # the layer adds bias_scale * beta, beta being the stored weight: a gradient step moves the bias
    # bias_scale^2 times further, weight decay alike (airbench's 64x learning rate for these biases: 8.0)
    bias_scale: float = 1.0
    # statistics fixed: it normalises by its moving statistics in training too and never updates them
    # (its scale and shift still train): fine-tuning on little data keeps the pretrained statistics
    frozen: bool = False


@dataclass(frozen=True)
class Scale:
    """Multiplies its input by a constant (airbench scales its logits by 1/9)."""

    name: str
    factor: float


@dataclass(frozen=True)
class Activation:
    name: str
    fn: str
    alpha: float = 0.2


@dataclass(frozen=True)
class Residual:
    """out = activation(body(x) + shortcut(x)); an empty shortcut is the identity."""

    name: str
    body: tuple
    shortcut: tuple = ()
    activation: str = "relu"
    alpha: float = 0.2


@dataclass(frozen=True)
class SqueezeExcite:
    """out = x * gate(body(mean of x over H, W)): squeeze-and-excitation. The body runs on the
    (1, 1, C) map of channel means (1x1 convolutions) and must give C channels back."""

    name: str
    body: tuple
    gate: str = "sigmoid"


COMPOSITES = (Residual, SqueezeExcite)  # layers made of layers: their parts are named "<block>_<part>"

Layer = Union[Conv, DepthwiseConv, ConvTranspose, Dense, MaxPool, AvgPool, GlobalAvgPool, GlobalMaxPool, Flatten,
              Reshape, Dropout, BatchNorm, Scale, Activation, ActivityPenalty, Residual, SqueezeExcite]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: tuple
    input_shape: tuple  # default (H, W, C) or (D,); None in H/W means "any size"
    init: str = "glorot_uniform"
    kind: str = "classifier"  # "classifier" | "generator" | "discriminator"
    description: str = ""


class SpecError(ValueError):
    pass


def _same(size, k, s):
    return None if size is None else math.ceil(size / s)


def _valid(size, k, s):
    return None if size is None else (size - k) // s + 1


def _symmetric(size, k, s):
    return None if size is None else (size + 2 * ((k - 1) // 2) - k) // s + 1


SIZES = {"same": _same, "valid": _valid, "symmetric": _symmetric}  # padding -> output size along one axis


def pool_stride(layer) -> int:
    return getattr(layer, "stride", 0) or layer.pool


def layer_output(layer, shape: tuple) -> tuple:
    """Output shape (without batch) of `layer` for input `shape`; raises SpecError on a mismatch."""
    out = _layer_output(layer, shape)
    if type(layer) in (Conv, DepthwiseConv, MaxPool, AvgPool) and any(s is not None and s < 1 for s in out[:2]):
        raise SpecError(f"layer '{layer.name}' would shrink its {shape[0]}x{shape[1]} input to nothing "
                        f"({out[0]}x{out[1]}); use fewer pooling or strided layers, or larger images")
    return out


def _layer_output(layer, shape: tuple) -> tuple:
    t = type(layer)
    if t in (Conv, DepthwiseConv, ConvTranspose, MaxPool, AvgPool, GlobalAvgPool, GlobalMaxPool,
             SqueezeExcite) and len(shape) != 3:
        raise SpecError(f"layer '{layer.name}' needs an image input (H, W, C), got {shape}")
    if t in (Conv, DepthwiseConv):
        if layer.padding not in SIZES:
            raise SpecError(f"layer '{layer.name}': padding '{layer.padding}' is not known; use one of {', '.join(PADDINGS)}")
        f = SIZES[layer.padding]
        out = layer.filters if t is Conv else shape[2] * layer.multiplier
        return (f(shape[0], layer.kernel, layer.stride), f(shape[1], layer.kernel, layer.stride), out)
    if t is ConvTranspose:
        if layer.padding != "same":
            raise SpecError(f"layer '{layer.name}': only padding='same' is supported for transposed convs")
        return tuple(None if s is None else s * layer.stride for s in shape[:2]) + (layer.filters,)
    if t in (MaxPool, AvgPool):
        padding = getattr(layer, "padding", "valid")
        if padding not in SIZES:
            raise SpecError(f"layer '{layer.name}': padding '{padding}' is not known; use one of {', '.join(PADDINGS)}")
        f, s = SIZES[padding], pool_stride(layer)
        return (f(shape[0], layer.pool, s), f(shape[1], layer.pool, s), shape[2])
    if t in (GlobalAvgPool, GlobalMaxPool):
        return (shape[2],)
    if t is Flatten:
        if any(s is None for s in shape):
            raise SpecError(f"layer '{layer.name}': cannot flatten a variable-size input {shape}; use global pooling")
        return (math.prod(shape),)
    if t is Reshape:
        if math.prod(layer.shape) != math.prod(shape):
            raise SpecError(f"layer '{layer.name}': cannot reshape {shape} to {layer.shape}")
        return tuple(layer.shape)
    if t is Dense:
        if len(shape) != 1:
            raise SpecError(f"layer '{layer.name}': Dense needs a flat input, got {shape}; add Flatten or global pooling")
        return (layer.units,)
    if t in (Dropout, BatchNorm, Scale, Activation, ActivityPenalty):
        return shape
    if t is Residual:
        out = shape
        for sub in layer.body:
            out = layer_output(sub, out)
        short = shape
        for sub in layer.shortcut:
            short = layer_output(sub, short)
        if out != short:
            raise SpecError(f"block '{layer.name}': body gives {out} but shortcut gives {short}; add a projection")
        return out
    if t is SqueezeExcite:
        out = (1, 1, shape[2])
        for sub in layer.body:
            out = layer_output(sub, out)
        if out != (1, 1, shape[2]):
            raise SpecError(f"block '{layer.name}': its body gives {out} from the (1, 1, {shape[2]}) channel means; "
                            f"it must give {shape[2]} channels back")
        return shape
    raise SpecError(f"unknown layer type {t.__name__}")


def parts(layer, shape: tuple) -> list[tuple[tuple, tuple]]:
    """A composite layer's parts as (layers, input shape) pairs; [] for a leaf layer."""
    if isinstance(layer, Residual):
        return [(layer.body, shape), (layer.shortcut, shape)]
    if isinstance(layer, SqueezeExcite):
        return [(layer.body, (1, 1, shape[2]) if shape else ())]
    return []


def infer_shapes(spec: ModelSpec) -> list[tuple]:
    """[(layer, input_shape, output_shape)] for the top-level layers, checking every nested one."""
    out, shape = [], tuple(spec.input_shape)
    for layer in spec.layers:
        new = layer_output(layer, shape)
        out.append((layer, shape, new))
        shape = new
    return out


def output_shape(spec: ModelSpec) -> tuple:
    return infer_shapes(spec)[-1][2]


def walk(layers, prefix: str = ""):
    """Yield (full_name, layer) for every leaf layer, composite blocks flattened as block_layer."""
    for layer in layers:
        if isinstance(layer, COMPOSITES):
            for sub, _ in parts(layer, ()):
                yield from walk(sub, f"{prefix}{layer.name}_")
        else:
            yield prefix + layer.name, layer


def leaf_shapes(spec: ModelSpec) -> dict[str, tuple[tuple, tuple]]:
    """{full_name: (input_shape, output_shape)} for every leaf layer."""
    result = {}

    def visit(layers, shape, prefix):
        for layer in layers:
            if isinstance(layer, COMPOSITES):
                for sub, inp in parts(layer, shape):
                    visit(sub, inp, f"{prefix}{layer.name}_")
                shape = layer_output(layer, shape)
            else:
                new = layer_output(layer, shape)
                result[prefix + layer.name] = (shape, new)
                shape = new

    visit(spec.layers, tuple(spec.input_shape), "")
    return result


NARROW = 8  # channels: oneDNN's x86 kernels work on blocks of 8 floats (AVX2) or 16 (AVX-512)


def narrow_convolutions(spec: ModelSpec) -> list[str]:
    """The convolutions of `spec` with fewer than NARROW output channels: oneDNN ran them 25x slower
    in torch's channels-last order and computed their gradients wrong in TensorFlow on an AVX2 CPU
    (bench/results/observations.md, O2 and O14), so both engines keep such a network off that path."""
    convs = {name for name, layer in walk(spec.layers) if isinstance(layer, (Conv, ConvTranspose, DepthwiseConv))}
    return [name for name, (_, out) in leaf_shapes(spec).items() if name in convs and out[-1] < NARROW]


def validate(spec: ModelSpec) -> None:
    if spec.init not in INITS:
        raise SpecError(f"init '{spec.init}' is not known; use one of {', '.join(INITS)}")
    names = [n for n, _ in walk(spec.layers)]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SpecError(f"layer names must be unique, repeated: {', '.join(sorted(dup))}")
    for name, layer in walk(spec.layers):
        act = getattr(layer, "activation", None) or getattr(layer, "fn", None)
        if act is not None and act not in ACTIVATIONS:
            raise SpecError(f"layer '{name}': activation '{act}' is not known; use one of {', '.join(ACTIVATIONS)}")
        if isinstance(layer, Dropout) and not 0 <= layer.rate < 1:
            raise SpecError(f"layer '{name}': dropout rate {layer.rate} must be in [0, 1)")
        if min(getattr(layer, "l1", 0), getattr(layer, "l2", 0)) < 0:
            raise SpecError(f"layer '{name}': l1 and l2 must be >= 0")
        if isinstance(layer, BatchNorm) and not (math.isfinite(layer.bias_scale) and layer.bias_scale > 0):
            raise SpecError(f"layer '{name}': bias_scale {layer.bias_scale} must be a positive number")
        if isinstance(layer, BatchNorm) and layer.frozen and layer.bias_scale != 1:
            raise SpecError(f"layer '{name}': a frozen batch norm takes no bias_scale")
        if isinstance(layer, Scale) and not (math.isfinite(layer.factor) and layer.factor != 0):
            raise SpecError(f"layer '{name}': factor {layer.factor} must be a finite, non-zero number")
        for f in fields(layer):
            v = getattr(layer, f.name)
            if f.name in ("filters", "units", "kernel", "pool", "multiplier") + (() if isinstance(layer, MaxPool) else ("stride",)) \
                    and (not isinstance(v, int) or v <= 0):
                raise SpecError(f"layer '{name}': {f.name}={v!r} must be a positive integer")
        if isinstance(layer, MaxPool) and (not isinstance(layer.stride, int) or layer.stride < 0):
            raise SpecError(f"layer '{name}': stride={layer.stride!r} must be a positive integer (0: the pool size)")
    def blocks(layers):
        for layer in layers:
            if isinstance(layer, COMPOSITES):
                yield layer
                for sub, _ in parts(layer, (1, 1, 1)):
                    yield from blocks(sub)

    for layer in blocks(spec.layers):
        act = layer.activation if isinstance(layer, Residual) else layer.gate
        if act not in ACTIVATIONS:
            raise SpecError(f"block '{layer.name}': activation '{act}' is not known; use one of {', '.join(ACTIVATIONS)}")
    infer_shapes(spec)


def freeze_batch_norms(spec: ModelSpec) -> ModelSpec:
    """The spec with every batch norm's statistics fixed (BatchNorm.frozen), composite blocks included."""
    from dataclasses import replace

    def layers(items):
        out = []
        for layer in items:
            if isinstance(layer, BatchNorm):
                layer = replace(layer, frozen=True)
            elif isinstance(layer, Residual):
                layer = replace(layer, body=layers(layer.body), shortcut=layers(layer.shortcut))
            elif isinstance(layer, SqueezeExcite):
                layer = replace(layer, body=layers(layer.body))
            out.append(layer)
        return tuple(out)

    return replace(spec, layers=layers(spec.layers))


def output_activation(spec: ModelSpec) -> str:
    """The activation applied to the model's output ('linear' for logits)."""
    for layer in reversed(spec.layers):
        if isinstance(layer, (Dropout, Flatten, Reshape, ActivityPenalty, Scale)):
            continue
        if isinstance(layer, Activation):
            return layer.fn
        return getattr(layer, "activation", "linear")
    return "linear"


def param_count(spec: ModelSpec) -> int:
    """Parameters as both builders create them (BatchNorm: gamma unless scale=False, beta, mean, variance)."""
    total, leaves = 0, dict(walk(spec.layers))
    for name, (inp, out) in leaf_shapes(spec).items():
        layer = leaves[name]
        if isinstance(layer, Conv):
            total += layer.kernel**2 * inp[2] * layer.filters + (layer.filters if layer.use_bias else 0)
        elif isinstance(layer, DepthwiseConv):
            total += layer.kernel**2 * out[2] + (out[2] if layer.use_bias else 0)
        elif isinstance(layer, ConvTranspose):
            total += layer.kernel**2 * inp[2] * layer.filters + (layer.filters if layer.use_bias else 0)
        elif isinstance(layer, Dense):
            total += inp[0] * layer.units + (layer.units if layer.use_bias else 0)
        elif isinstance(layer, BatchNorm):
            total += (4 if layer.scale else 3) * inp[-1]
    return total


def dirac(kernel):
    """airbench's identity init of a (kh, kw, in, out) kernel (Keras' layout, numpy): filter j for
    j < min(in, out) becomes 1 at the centre tap (kh//2, kw//2) of input channel j and 0 elsewhere, as
    torch.nn.init.dirac_ on the first `in` filters; the other filters keep their values."""
    import numpy as np

    k = np.array(kernel, copy=True)
    n = min(k.shape[2], k.shape[3])
    k[:, :, :, :n] = 0
    k[k.shape[0] // 2, k.shape[1] // 2, np.arange(n), np.arange(n)] = 1
    return k


def training_bytes(spec: ModelSpec, batch_size: int) -> int:
    """About what training holds in memory, from the spec alone: weights, gradients and two
    optimizer slots (float32), and every layer's output for a batch, kept for the backward pass
    (float32, twice over for the gradient)."""
    activations = sum(math.prod(out) for _, out in leaf_shapes(spec).values())
    return 16 * param_count(spec) + 8 * batch_size * activations


def forward_flops(spec: ModelSpec, input_shape: tuple | None = None) -> int:
    """Floating-point operations of one image's forward pass, counted as torch's FlopCounterMode
    counts them: 2 per multiply-add of convolutions, transposed convolutions and dense layers (the
    matrix products that bound training); biases, activations, pooling and batch norm are left out
    (memory-bound and a few percent of the total). Training costs about 3x this (backward: the
    gradients of inputs and of weights, each a product as large as the forward one)."""
    from dataclasses import replace

    spec = spec if input_shape is None else replace(spec, input_shape=tuple(input_shape))
    if None in spec.input_shape:
        raise SpecError(f"model '{spec.name}' takes any image size; give input_shape to count its FLOPs")
    total, leaves = 0, dict(walk(spec.layers))
    for name, (inp, out) in leaf_shapes(spec).items():
        layer = leaves[name]
        if isinstance(layer, Conv):  # each output pixel: k*k*C_in multiply-adds per filter
            total += 2 * out[0] * out[1] * layer.kernel**2 * inp[2] * layer.filters
        elif isinstance(layer, DepthwiseConv):  # each output value: k*k multiply-adds over its own channel
            total += 2 * out[0] * out[1] * out[2] * layer.kernel**2
        elif isinstance(layer, ConvTranspose):  # each input pixel scatters k*k*C_out multiply-adds per channel
            total += 2 * inp[0] * inp[1] * layer.kernel**2 * inp[2] * layer.filters
        elif isinstance(layer, Dense):
            total += 2 * inp[0] * layer.units
    return total
