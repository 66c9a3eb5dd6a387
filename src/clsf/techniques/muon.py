"""optim.muon_lr: Muon for the convolution kernels (the optimizer of airbench94's successor,
airbench94_muon, which reaches airbench94's accuracy in 8 epochs instead of 9.9).

Every trained convolution kernel W (out x in x kh x kw, seen as a matrix G of out rows) steps as

    b = m*b + g;  u = g + m*b                     (Nesterov momentum, m = optim.muon_momentum)
    W = W * sqrt(out) / |W|                        (the kernel renormalised: |W| stays sqrt(out))
    W = W - lr_muon * NS(u)                        (NS: u's matrix orthogonalised, below)

where NS runs three steps of a quintic Newton-Schulz iteration on X = u / (|u| + 1e-7):
A = X X^T, X = a X + (b A + c A^2) X with (a, b, c) = (3.4445, -4.7750, 2.0315), on the wide
orientation of the matrix (rows <= columns). It pushes u's singular values towards ~1 (to within
about 0.5-1.5: these coefficients trade convergence for speed; one under ~1/40 of |u| stays small,
three steps lift it ~40x), so each kernel moves by about the same amount in every direction its
gradient spans, whatever the gradient's scale. lr_muon is optim.muon_lr scaled by the schedule as
optim.lr is (lr_muon = muon_lr * lr_t / optim.lr). Every other variable (biases, batch norm, the
dense head) takes optim.name's rule at optim.lr. Decoupled weight decay still runs first on the
kernels and is undone by the renormalisation: a kernel's scale is fixed.

The orientation does not change the result: orthogonalising the transpose gives the transpose,
and reordering a matrix's columns (Keras stores kernels kh x kw x in x out, torch out x in x kh x
kw) reorders the result's columns the same way. So each framework works on its own layout and the
engines agree (tests/test_muon.py: each framework's step against numpy's, then every engine's
training loop, one step and 24). The iteration runs in float32 (airbench94_muon runs it in bf16 on
a GPU).
"""

from __future__ import annotations

import math

import numpy as np

COEFFICIENTS = (3.4445, -4.7750, 2.0315)
STEPS = 3
EPS = 1e-7


def applies(shape) -> bool:
    """Muon steps 4-d variables: convolution kernels (a frozen one is not trained, so not stepped)."""
    return len(shape) == 4


def check_model(spec, name: str) -> None:
    """Muon's matrix is a kernel's rows of output channels, which a depthwise kernel's layouts do not
    share between Keras (kh, kw, in, multiplier) and torch (in * multiplier, 1, kh, kw): refused."""
    from clsf.errors import UserError
    from clsf.models.spec import DepthwiseConv, walk

    depthwise = [n for n, layer in walk(spec.layers) if isinstance(layer, DepthwiseConv)]
    if depthwise:
        raise UserError(f"optim.muon_lr steps plain convolution kernels, and model '{name}' has depthwise ones "
                        f"({', '.join(depthwise[:3])}{', ...' if len(depthwise) > 3 else ''}); drop optim.muon_lr "
                        "(optim.muon_lr=0) or train a model without depthwise convolutions.")


def orthogonalize(x, matmul, transpose, norm):
    """The Newton-Schulz iteration on a 2-d array of any framework, given its matmul, transpose and
    Frobenius norm: one definition for numpy, torch and keras.ops."""
    a, b, c = COEFFICIENTS
    tall = x.shape[0] > x.shape[1]
    x = x / (norm(x) + EPS)
    if tall:
        x = transpose(x)
    for _ in range(STEPS):
        s = matmul(x, transpose(x))
        x = a * x + matmul(b * s + c * matmul(s, s), x)
    return transpose(x) if tall else x


# -- numpy reference: a kernel in torch's layout (out, in, kh, kw) --------------------------------
def step_np(w: np.ndarray, g: np.ndarray, buf: np.ndarray, lr: float, momentum: float):
    """One Muon step; returns the new kernel and momentum buffer (float32, as the engines compute)."""
    buf = momentum * buf + g
    u = (g + momentum * buf).reshape(len(g), -1)
    w = w * np.float32(math.sqrt(len(w)) / np.linalg.norm(w))
    update = orthogonalize(u.astype(np.float32), np.matmul, np.transpose, np.linalg.norm)
    return (w - np.float32(lr) * update.reshape(w.shape)).astype(np.float32), buf.astype(np.float32)


# -- torch: a parameter in (out, in, kh, kw), whatever its memory format ----------------------------
def step_torch(p, g, buf, lr: float, momentum: float) -> None:
    import torch

    buf.mul_(momentum).add_(g)
    u = g.add(buf, alpha=momentum).reshape(len(g), -1)
    p.mul_(math.sqrt(len(p)) / torch.linalg.vector_norm(p))
    update = orthogonalize(u.float(), torch.matmul, torch.t, torch.linalg.vector_norm)
    p.add_(update.view(g.shape), alpha=-lr)


# -- Keras (every backend): a variable in (kh, kw, in, out), stepped inside an optimizer ------------
def step_keras(optimizer, variable, g, buf, lr, momentum: float) -> None:
    from keras import ops

    def frobenius(x):
        return ops.norm(ops.reshape(x, (-1,)))

    out = variable.shape[-1]
    optimizer.assign(buf, ops.add(ops.multiply(buf, momentum), g))
    u = ops.reshape(ops.add(g, ops.multiply(buf, momentum)), (-1, out))  # (kh*kw*in, out): G's transpose, reordered
    optimizer.assign(variable, ops.multiply(variable, math.sqrt(out) / frobenius(variable)))
    update = orthogonalize(u, ops.matmul, ops.transpose, frobenius)
    optimizer.assign_sub(variable, ops.multiply(ops.reshape(update, variable.shape), lr))


def keras_class(base, ratio: float, momentum: float):
    """A subclass of the Keras optimizer class `base` (keras.optimizers.SGD, ...) whose convolution
    kernels step by Muon at `ratio` times its scheduled rate, each with a momentum buffer of its own.
    (A subclass also runs Keras' per-variable update on the torch backend, where Keras' own SGD
    swaps in a multi-tensor form.)"""
    import keras

    class Muon(base):
        def build(self, variables):
            super().build(variables)
            self.muon_buffers = {self._var_key(v): self.add_variable_from_reference(v, name="muon")
                                 for v in variables if applies(v.shape)}

        def update_step(self, gradient, variable, learning_rate):
            buf = self.muon_buffers.get(self._var_key(variable))
            if buf is None:
                return super().update_step(gradient, variable, learning_rate)
            lr = keras.ops.multiply(keras.ops.cast(learning_rate, variable.dtype), ratio)
            step_keras(self, variable, keras.ops.cast(gradient, variable.dtype), buf, lr, momentum)

    return Muon
