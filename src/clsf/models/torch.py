"""Build a torch.nn.Module from a ModelSpec: NCHW inputs, submodules named after the spec, logits out.

Two details make the torch model compute exactly what the Keras model computes:
- "same" padding uses TensorFlow's rule (extra row/column at the bottom/right), see `Conv2dSame`;
- initialisation follows `spec.init` with the same fans as Keras (see `init_`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from clsf.models.spec import (Activation, ActivityPenalty, AvgPool, BatchNorm, Conv, ConvTranspose, Dense,
                              DepthwiseConv, Dropout, Flatten, GlobalAvgPool, GlobalMaxPool, MaxPool, ModelSpec, Reshape,
                              Residual, Scale, SqueezeExcite, dirac, layer_output, pool_stride, validate, walk)


def activation(name: str, alpha: float = 0.2) -> nn.Module:
    return {
        "linear": nn.Identity, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU,
        "swish": nn.SiLU, "gelu": nn.GELU, "softmax": lambda: nn.Softmax(dim=1),
        "leaky_relu": lambda: nn.LeakyReLU(alpha), "relu6": nn.ReLU6,
        "hard_swish": nn.Hardswish, "hard_sigmoid": nn.Hardsigmoid,  # x * relu6(x + 3) / 6 and relu6(x + 3) / 6, as Keras'
    }[name]()


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's 'same' padding: total pad = max((ceil(n/s)-1)*s + k - n, 0),
    split with the odd pixel at the bottom/right."""

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        h, w = x.shape[-2:]
        ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


class Conv2dSubsample(nn.Conv2d):
    """A 1x1 convolution with stride s as every s-th pixel through a stride-1 1x1 convolution: the same
    sum, and the same module (weights, state_dict, stride), without oneDNN's strided 1x1 kernel
    gradient, wrong on few channels (bench/results/observations.md, O16). As models/keras.py's."""

    def forward(self, x):
        sh, sw = self.stride
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias, 1, 0, 1, self.groups)


class MaxPool2dSame(nn.MaxPool2d):
    """Max pooling with TensorFlow's 'same' padding (-inf at the bottom/right first), as Conv2dSame."""

    def forward(self, x):
        k, s = self.kernel_size, self.stride
        h, w = x.shape[-2:]
        ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=float("-inf"))
        return super().forward(x)


class SqueezeExciteModule(nn.Module):
    """x * gate(body(mean of x over H, W)), the body on the (N, C, 1, 1) channel means."""

    def __init__(self, body: nn.Sequential, gate: nn.Module):
        super().__init__()
        self.body, self.gate = body, gate

    def forward(self, x):
        return x * self.gate(self.body(x.mean(dim=(2, 3), keepdim=True)))


class Op(nn.Module):
    """One spec layer: the framework op followed by its activation; `l1`/`l2` regularise its kernel."""

    def __init__(self, op: nn.Module, act: nn.Module | None = None, l1: float = 0.0, l2: float = 0.0):
        super().__init__()
        self.op = op
        self.act = act if act is not None else nn.Identity()
        self.l1, self.l2 = l1, l2

    def forward(self, x):
        return self.act(self.op(x))

    def penalty(self):
        """Keras' L1L2 on the kernel: l1 * sum|W| + l2 * sum(W^2) (layout does not change a sum)."""
        w = self.op.weight
        return self.l1 * w.abs().sum() + self.l2 * w.square().sum()


class ActivityPenaltyModule(nn.Module):
    """The add_loss example layer: identity, remembering rate * sum(input) of this forward pass."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate, self.value = rate, None

    def forward(self, x):
        self.value = self.rate * x.sum()
        return x

    def penalty(self):
        return self.value


class Lambda(nn.Module):
    def __init__(self, fn, text: str):
        super().__init__()
        self.fn, self.text = fn, text

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self):
        return self.text


class Block(nn.Module):
    """Residual: act(body(x) + shortcut(x))."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Sequential, act: nn.Module):
        super().__init__()
        self.body, self.shortcut, self.act = body, shortcut, act

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


class _KerasVariance:
    """Batch norm whose moving variance follows Keras: updated with the biased batch variance.
    torch updates it with the unbiased one (n/(n-1) larger). torch's fused op updates a copy here
    (autograd keeps that copy), and the Keras value is derived from it on C numbers per step.
    The spec's scale=False drops the weight (gamma = 1); bias_scale multiplies the stored bias."""

    bias_scale = 1.0
    frozen = False  # statistics fixed (the spec's BatchNorm.frozen): the moving ones, in training too

    def configure(self, scale: bool, bias_scale: float, frozen: bool = False):
        if not scale:
            del self.weight
            self.register_parameter("weight", None)
        self.bias_scale, self.frozen = float(bias_scale), bool(frozen)
        return self

    def forward(self, x):
        if self.frozen:  # normalise by the moving statistics, never update them; scale and shift still train
            self._check_input_dim(x)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        bias = self.bias if self.bias_scale == 1 else self.bias * self.bias_scale
        if not (self.training and self.track_running_stats):
            if bias is self.bias:
                return super().forward(x)
            self._check_input_dim(x)
            batch_stats = self.training or self.running_mean is None  # torch's own rule for this case
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, bias, batch_stats, 0.0, self.eps)
        self._check_input_dim(x)
        n = x.numel() // x.shape[1]  # values per channel in this batch
        var = self.running_var.clone()  # (C,) torch writes (1-m)*old + m*unbiased here
        out = F.batch_norm(x, self.running_mean, var, self.weight, bias, True, self.momentum, self.eps)
        with torch.no_grad():
            kept = self.running_var * (1 - self.momentum)
            self.running_var.copy_(kept + (var - kept) * ((n - 1) / n))  # (1-m)*old + m*biased
        return out


class BatchNorm2d(_KerasVariance, nn.BatchNorm2d):
    pass


class BatchNorm1d(_KerasVariance, nn.BatchNorm1d):
    pass


def _module(layer, in_shape: tuple) -> nn.Module:
    t = type(layer)
    if t in (Conv, DepthwiseConv):
        k, stride, c = layer.kernel, layer.stride, in_shape[2]
        out, groups = (layer.filters, 1) if t is Conv else (c * layer.multiplier, c)  # depthwise: a group per channel
        if t is Conv and k == 1 and stride > 1:  # no padding in any mode
            conv = Conv2dSubsample(c, out, 1, stride, 0, bias=layer.use_bias, groups=groups)
        elif layer.padding == "symmetric" or (layer.padding == "same" and stride == 1 and k % 2 == 1):
            conv = nn.Conv2d(c, out, k, stride, (k - 1) // 2, bias=layer.use_bias, groups=groups)  # the same pads
        elif layer.padding == "same":
            conv = Conv2dSame(c, out, k, stride, 0, bias=layer.use_bias, groups=groups)
        else:
            conv = nn.Conv2d(c, out, k, stride, 0, bias=layer.use_bias, groups=groups)
        return Op(conv, activation(layer.activation, layer.alpha), getattr(layer, "l1", 0.0), getattr(layer, "l2", 0.0))
    if t is ConvTranspose:
        pad = (layer.kernel - layer.stride) // 2
        if (layer.kernel - layer.stride) % 2 or pad < 0:
            raise ValueError(f"layer '{layer.name}': transposed conv needs kernel - stride even and >= 0")
        conv = nn.ConvTranspose2d(in_shape[2], layer.filters, layer.kernel, layer.stride, pad, bias=layer.use_bias)
        return Op(conv, activation(layer.activation, layer.alpha))
    if t is Dense:
        return Op(nn.Linear(in_shape[0], layer.units, bias=layer.use_bias), activation(layer.activation, layer.alpha),
                  layer.l1, layer.l2)
    if t is ActivityPenalty:
        return ActivityPenaltyModule(layer.rate)
    if t is MaxPool:
        stride = pool_stride(layer)
        if layer.padding == "same":
            return MaxPool2dSame(layer.pool, stride)
        return nn.MaxPool2d(layer.pool, stride, (layer.pool - 1) // 2 if layer.padding == "symmetric" else 0)
    if t is AvgPool:
        return nn.AvgPool2d(layer.pool)
    if t is GlobalAvgPool:
        return Lambda(lambda x: x.mean(dim=(2, 3)), "mean over H, W")
    if t is GlobalMaxPool:
        return Lambda(lambda x: x.amax(dim=(2, 3)), "max over H, W")
    if t is Flatten:
        return nn.Flatten()  # NCHW -> C*H*W; transfer reorders the next Dense's rows
    if t is Reshape:
        h, w, c = layer.shape  # Keras reshapes a flat vector as HWC: do the same, then go to NCHW
        return Lambda(lambda x: x.reshape(-1, h, w, c).permute(0, 3, 1, 2), f"to (-1, {h}, {w}, {c}) HWC -> NCHW")
    if t is Dropout:
        return nn.Dropout(layer.rate)
    if t is BatchNorm:
        cls = BatchNorm2d if len(in_shape) == 3 else BatchNorm1d
        bn = cls(in_shape[-1], eps=layer.epsilon, momentum=1 - layer.momentum)  # torch momentum = 1 - Keras'
        return bn.configure(layer.scale, layer.bias_scale, layer.frozen)
    if t is Scale:
        factor = float(layer.factor)
        return Lambda(lambda x: x * factor, f"x {factor:g}")
    if t is Activation:
        return activation(layer.fn, layer.alpha)
    raise TypeError(f"no torch builder for {t.__name__}")


def _sequential(layers, shape) -> tuple[nn.Sequential, tuple]:
    seq = nn.Sequential()
    for layer in layers:
        seq.add_module(layer.name, _build(layer, shape))
        shape = layer_output(layer, shape)
    return seq, shape


def _build(layer, shape) -> nn.Module:
    if isinstance(layer, Residual):
        body, _ = _sequential(layer.body, shape)
        shortcut, _ = _sequential(layer.shortcut, shape)
        return Block(body, shortcut, activation(layer.activation, layer.alpha))
    if isinstance(layer, SqueezeExcite):
        body, _ = _sequential(layer.body, (1, 1, shape[2]))
        return SqueezeExciteModule(body, activation(layer.gate))
    return _module(layer, shape)


def _leaves(layers, modules, prefix: str = "") -> dict[str, nn.Module]:
    """{full spec name: module} of every leaf layer, composite blocks followed (the names `walk` gives)."""
    out = {}
    for layer in layers:
        m = modules[layer.name]
        if isinstance(layer, Residual):
            out.update(_leaves(layer.body, m.body._modules, f"{prefix}{layer.name}_"))
            out.update(_leaves(layer.shortcut, m.shortcut._modules, f"{prefix}{layer.name}_"))
        elif isinstance(layer, SqueezeExcite):
            out.update(_leaves(layer.body, m.body._modules, f"{prefix}{layer.name}_"))
        else:
            out[prefix + layer.name] = m
    return out


def init_(model: nn.Module, init: str) -> None:
    """Initialise every conv/linear layer like the Keras builder does for the same `init`."""
    for m in model.modules():
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            continue
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)  # same fans as Keras' kernels
        if isinstance(m, nn.Conv2d) and m.groups > 1:  # a depthwise kernel: Keras counts its (kh, kw, in,
            rf = m.weight[0, 0].numel()  # multiplier) shape as a plain kernel's, so the bound uses those fans
            fan_in, fan_out = m.groups * rf, m.out_channels // m.groups * rf
            bound = {"glorot_uniform": math.sqrt(6 / (fan_in + fan_out)), "he_uniform": math.sqrt(6 / fan_in)}
            nn.init.uniform_(m.weight, -bound.get(init, fan_in**-0.5), bound.get(init, fan_in**-0.5))
        elif init == "glorot_uniform":
            nn.init.xavier_uniform_(m.weight)
        elif init == "he_uniform":
            nn.init.kaiming_uniform_(m.weight, a=0, nonlinearity="relu")
        else:  # torch_default
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
        if m.bias is not None:
            if init == "torch_default":
                nn.init.uniform_(m.bias, -fan_in**-0.5, fan_in**-0.5)
            else:
                nn.init.zeros_(m.bias)


class SpecNet(nn.Sequential):
    """The spec as a torch Sequential; `leaf(name)` finds a layer by its full spec name."""

    def __init__(self, spec: ModelSpec):
        validate(spec)
        super().__init__()
        self.spec = spec
        shape = tuple(spec.input_shape)
        for layer in spec.layers:
            self.add_module(layer.name, _build(layer, shape))
            shape = layer_output(layer, shape)
        object.__setattr__(self, "_leaf_modules", _leaves(spec.layers, self._modules))  # a plain dict, not a submodule
        init_(self, spec.init)
        with torch.no_grad():
            for name, layer in walk(spec.layers):
                if isinstance(layer, Conv) and layer.dirac:  # (out, in, kh, kw) <-> Keras' (kh, kw, in, out)
                    w = self.leaf(name).op.weight
                    w.copy_(torch.from_numpy(dirac(w.detach().numpy().transpose(2, 3, 1, 0)).transpose(3, 2, 0, 1).copy()))
        self.freeze_kernels()

    def freeze_kernels(self) -> None:
        """Conv(frozen=True): no gradient for the kernel (so no update, no decay); again after
        anything that sets requires_grad on whole layers (freeze=trunk ending)."""
        for name, layer in walk(self.spec.layers):
            if isinstance(layer, Conv) and layer.frozen:
                self.leaf(name).op.weight.requires_grad_(False)

    def penalties(self):
        """The model's own losses for the last forward pass (what Keras keeps in model.losses):
        kernel regularisers and activity penalties, summed; None when the spec has none."""
        terms = [m.penalty() for m in self.modules()
                 if isinstance(m, ActivityPenaltyModule) or (isinstance(m, Op) and (m.l1 or m.l2))]
        return sum(terms) if terms else None

    def leaf(self, name: str) -> nn.Module:
        return self._leaf_modules[name]


def build_torch(spec: ModelSpec) -> SpecNet:
    return SpecNet(spec)
