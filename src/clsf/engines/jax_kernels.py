"""Keras-on-JAX convolutions with the kernel's gradient computed as matrix products, on the CPU.

XLA's CPU backend computes a convolution's kernel gradient (dL/dW = sum over batch and positions of
input patch x output gradient) as a generic convolution with the batch as the contracted dimension,
and that runs 4-6x slower than the forward pass. Measured on an AMD EPYC (2 cores, fp32, a jitted
3x3 convolution, batch 256): 64->256 channels at 16x16 893 ms against 216 ms as matmuls; 24->64 at
32x32 1257 ms against 201 ms; 256->256 at 8x8 372 ms against 205 ms (the input gradient and the
forward pass are XLA's own and fine: 307 and 193 ms for the first). Written as one matmul per kernel
tap,

    dW[i, j] = X_shifted(i, j)^T @ dY      X_shifted: (N*Ho*Wo, C_in), dY: (N*Ho*Wo, C_out),

it is the same sum in another order (within 2e-6 of XLA's, relative to the largest entry).

`install()` puts `conv` in place of Keras' JAX `conv` (keras.src.backend.jax.nn.conv, which every
Keras convolution layer calls) in this process, which the keras-jax engine owns; the forward pass
and the input's gradient stay XLA's. Convolutions it does not cover -- grouped, dilated, channels
first, not 2-D -- go to Keras' own function unchanged. CLSF_XLA_CONV_GRAD=1 leaves XLA's gradient in
place (an A/B for bench/step_profile.py --versus env:CLSF_XLA_CONV_GRAD=1).
"""

from __future__ import annotations

import os

KEEP_XLA = "CLSF_XLA_CONV_GRAD"
_ORIGINAL = []  # Keras' own conv, once replaced


def _pads(spatial, window, strides, padding):
    """((top, bottom), (left, right)) as lax pads `padding` ('valid' | 'same', any case)."""
    from jax import lax

    return tuple(lax.padtype_to_pads(spatial, window, strides, padding.upper()))


def _make_conv2d():
    import functools

    import jax
    import jax.numpy as jnp
    from jax import lax

    dims = ("NHWC", "HWIO", "NHWC")

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))  # strides, pads: static tuples
    def conv2d(x, w, strides, pads):
        return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=dims)

    def forward(x, w, strides, pads):
        return conv2d(x, w, strides, pads), (x, w)

    def backward(strides, pads, saved, dy):
        x, w = saved
        _, input_grad = jax.vjp(lambda a: lax.conv_general_dilated(a, w, strides, pads, dimension_numbers=dims), x)
        (dx,) = input_grad(dy)  # XLA's own: a convolution of dy with the flipped kernel
        kh, kw, c_in, c_out = w.shape
        n, ho, wo, _ = dy.shape
        sh, sw = strides
        xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))  # (N, H + top + bottom, W + left + right, C_in)
        d = dy.reshape(n * ho * wo, c_out)
        taps = []
        for i in range(kh):
            for j in range(kw):
                # the input pixels tap (i, j) met, one row per output position: (N*Ho*Wo, C_in)
                patch = lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c_in),
                                  (1, sh, sw, 1)).reshape(n * ho * wo, c_in)
                taps.append(jnp.matmul(patch.T, d, preferred_element_type=jnp.float32))  # (C_in, C_out)
        dw = jnp.stack(taps).reshape(kh, kw, c_in, c_out).astype(w.dtype)
        return dx, dw

    conv2d.defvjp(forward, backward)
    return conv2d


_CONV2D = []


def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """Keras' JAX `conv` (same arguments, same result), its kernel gradient as matmuls where covered."""
    from keras.src import backend
    from keras.src.backend.jax.core import convert_to_tensor

    original = _ORIGINAL[0]
    fmt = backend.standardize_data_format(data_format)
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    covered = (inputs.ndim == 4 and fmt == "channels_last" and pair(dilation_rate) == (1, 1)
               and isinstance(padding, str) and padding.lower() in ("valid", "same")
               and kernel.shape[-2] == inputs.shape[-1])  # not grouped
    if not covered:
        return original(inputs, kernel, strides, padding, data_format, dilation_rate)
    kernel = convert_to_tensor(kernel)
    inputs = convert_to_tensor(inputs, dtype=kernel.dtype)
    strides = pair(strides)
    pads = _pads(inputs.shape[1:3], kernel.shape[:2], strides, padding)
    if not _CONV2D:
        _CONV2D.append(_make_conv2d())
    out = _CONV2D[0](inputs, kernel, strides, pads)
    if out.size == 0 and inputs.size != 0:  # Keras' own check, in its words
        raise ValueError("The convolution operation resulted in an empty output. This can happen if the input is too "
                         "small for the given kernel size, strides, dilation rate, and padding mode. Please check the "
                         "input shape and convolution parameters.")
    return out


def install() -> bool:
    """Route Keras' JAX convolutions through `conv` in this process (once); False where
    CLSF_XLA_CONV_GRAD=1 keeps XLA's own gradient."""
    if os.environ.get(KEEP_XLA) == "1":
        return False
    from keras.src.backend.jax import nn

    if not _ORIGINAL:
        _ORIGINAL.append(nn.conv)
        nn.conv = conv
    return True


def installed() -> bool:
    from keras.src.backend.jax import nn

    return nn.conv is conv
