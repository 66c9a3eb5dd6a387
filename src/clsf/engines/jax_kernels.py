"""Keras-on-JAX convolutions and max pools with gradients XLA's CPU backend computes slowly, on the CPU.

Where XLA's convolutions are YNNPACK's (jaxlib 0.10's default; xla_flags() below keeps them out, so
not in the keras-jax engine), its kernel gradient (dL/dW = sum over batch and positions of input
patch x output gradient) runs 4-6x slower than the forward pass. Measured on an AMD EPYC (2 cores,
fp32, a jitted 3x3 convolution, batch 256, YNNPACK's convolutions): 64->256 channels at 16x16 893 ms
against 216 ms as matmuls; 24->64 at 32x32 1257 ms against 201 ms; 256->256 at 8x8 372 ms against
205 ms. Written as one matmul per kernel tap,

    dW[i, j] = X_shifted(i, j)^T @ dY      X_shifted: (N*Ho*Wo, C_in), dY: (N*Ho*Wo, C_out),

it is the same sum in another order (within 2e-6 of XLA's, relative to the largest entry). Summed over
a whole batch at once the patches and output gradient leave the cache: a batch of 128 ran 2x slower
than chunks of CHUNK_ROWS output positions summed in a lax.scan (64->256 at 15x15: 82 ms against 149;
24->64 at 31x31: 42-77 against 108-137; 256->256 at 7x7, a single chunk, unchanged).

With XLA's own (Eigen) convolutions the engine runs, XLA's kernel gradient is the faster one, and
`install()` leaves it in place: airbench's six 3x3 layers at batch 500, kernel gradients summed,
1030 ms as XLA's against 1376 as the taps' matmuls (YNNPACK's matmuls run 46-109 GFLOP/s here;
under YNNPACK's convolutions 5573 against 1354: bench/results/jax-kernel-grad.md); the recipe
speedrun-muon's step at batch 2000 13.6-14.3 s against 16.2-16.5 (processes alternated three times).

A max pool's gradient is XLA's select-and-scatter, which took 430 ms for a 2x2 pool of a
(500, 31, 31, 64) map where the forward pass takes 7 ms. A pool whose windows tile the map (stride =
window, no padding) is here a reshape and a max, its gradient routed to each window's first maximum
as select-and-scatter routes it (the same bits, ties included): 74 ms forward and backward (with
Eigen's convolutions: 93 ms against XLA's 594).

XLA's own forward convolutions run faster than its YNNPACK fusions on this CPU: xla_flags() keeps them
out (the engine sets it before JAX starts).

`install()` puts `max_pool` -- and `conv` where XLA's convolutions are YNNPACK's -- in place of Keras'
JAX functions (keras.src.backend.jax.nn, which every Keras convolution and max-pooling layer calls)
in this process, which the keras-jax engine owns. What they do not cover -- grouped, dilated or 1-D
convolutions, overlapping or padded pools, channels first -- goes to Keras' own functions unchanged.
CLSF_XLA_GRADIENTS=1 leaves XLA's gradients in place (an A/B for bench/step_profile.py --versus
env:CLSF_XLA_GRADIENTS=1).
"""

from __future__ import annotations

import os

from clsf.engines import replace

KEEP_XLA = "CLSF_XLA_GRADIENTS"
CHUNK_ROWS = 4096  # output positions (images x Ho x Wo) a kernel gradient sums at a time (kernel_grad)
_ORIGINAL = {}  # Keras' own functions, by name, once replaced


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
        xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))  # (N, H + top + bottom, W + left + right, C_in)
        dw = kernel_grad(xp, dy, w.shape[:2], strides).astype(w.dtype)
        return dx, dw

    def taps(xp, dy, kernel, strides):  # (kh, kw, C_in, C_out) in fp32: one matmul per kernel tap
        (kh, kw), (sh, sw) = kernel, strides
        n, ho, wo, c_out = dy.shape
        c_in = xp.shape[-1]
        d = dy.reshape(n * ho * wo, c_out)
        out = []
        for i in range(kh):
            for j in range(kw):
                # the input pixels tap (i, j) met, one row per output position: (N*Ho*Wo, C_in)
                patch = lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c_in),
                                  (1, sh, sw, 1)).reshape(n * ho * wo, c_in)
                out.append(jnp.matmul(patch.T, d, preferred_element_type=jnp.float32))  # (C_in, C_out)
        return jnp.stack(out).reshape(kh, kw, c_in, c_out)

    def kernel_grad(xp, dy, kernel, strides):
        """dW for the padded input xp, summed over the batch CHUNK_ROWS output positions at a time
        (lax.scan keeps one chunk's patches and output gradient in cache: a whole batch of 128 ran
        2x slower), the rest of the batch after the last whole chunk added at the end."""
        n, ho, wo, _ = dy.shape
        per = max(1, CHUNK_ROWS // (ho * wo))  # images a chunk
        whole = n // per
        if whole < 2:
            return taps(xp, dy, kernel, strides)
        chunks = (xp[:whole * per].reshape(whole, per, *xp.shape[1:]), dy[:whole * per].reshape(whole, per, *dy.shape[1:]))
        dw0 = jnp.zeros((*kernel, xp.shape[-1], dy.shape[-1]), jnp.float32)
        dw = lax.scan(lambda acc, c: (acc + taps(*c, kernel, strides), None), dw0, chunks)[0]
        return dw if whole * per == n else dw + taps(xp[whole * per:], dy[whole * per:], kernel, strides)

    conv2d.defvjp(forward, backward)
    return conv2d


_CONV2D = []


def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """Keras' JAX `conv` (same arguments, same result), its kernel gradient as matmuls where covered."""
    from keras.src import backend
    from keras.src.backend.jax.core import convert_to_tensor

    original = _ORIGINAL["conv"]
    fmt = backend.standardize_data_format(data_format)
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


def _make_max_pool():
    import functools

    import jax
    import jax.numpy as jnp

    def windows(x, ph, pw):  # (N, Ho, ph, Wo, pw, C): the tiling windows, a rest row or column dropped
        n, h, w, c = x.shape
        return x[:, :h // ph * ph, :w // pw * pw].reshape(n, h // ph, ph, w // pw, pw, c)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def max_pool(x, window):
        return windows(x, *window).max(axis=(2, 4))

    def forward(x, window):
        y = max_pool(x, window)
        return y, (x, y)

    def backward(window, saved, dy):
        x, y = saved
        ph, pw = window
        n, h, w, c = x.shape
        xw, taken, rows = windows(x, ph, pw), jnp.zeros(y.shape, bool), []
        for a in range(ph):  # the window in row-major order: the first maximum takes the gradient
            row = []
            for b in range(pw):
                first = (xw[:, :, a, :, b, :] == y) & ~taken
                taken = taken | first
                row.append(jnp.where(first, dy, jnp.zeros((), dy.dtype)))
            rows.append(jnp.stack(row, axis=3))  # (N, Ho, Wo, pw, C)
        dx = jnp.stack(rows, axis=2).reshape(n, y.shape[1] * ph, y.shape[2] * pw, c)  # (N, Ho, ph, Wo, pw, C)
        return (jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0))),)

    max_pool.defvjp(forward, backward)
    return max_pool


_MAX_POOL = []


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Keras' JAX `max_pool` (same arguments, same result and gradient), tiling pools as a reshape."""
    from keras.src import backend

    window = pair(pool_size)
    covered = (inputs.ndim == 4 and backend.standardize_data_format(data_format) == "channels_last"
               and padding.lower() == "valid" and pair(window if strides is None else strides) == window
               and inputs.shape[1] >= window[0] and inputs.shape[2] >= window[1])
    if not covered:
        return _ORIGINAL["max_pool"](inputs, pool_size, strides, padding, data_format)
    if not _MAX_POOL:
        _MAX_POOL.append(_make_max_pool())
    return _MAX_POOL[0](inputs, window)


def pair(v) -> tuple:
    """A Keras size argument (an int or a sequence of two) as (height, width)."""
    return tuple(int(e) for e in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


REPLACED = {"conv": conv, "max_pool": max_pool}


YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
NO_YNN_CONVS = f"--{YNN_FLAG}=-individual_convolution"


def xla_flags(flags: str) -> str:
    """XLA_FLAGS for the keras-jax engine's process: `flags` and NO_YNN_CONVS, which keeps convolutions
    out of XLA's YNNPACK fusions (they go to XLA's own Eigen kernels; matmuls stay YNNPACK's).

    Measured on an AMD EPYC (2 cores, fp32, jitted gradients of a Keras model, two alternating rounds):
    airbench's network at batch 256 forward 460-513 ms against 683-735, forward and backward 1603-1857
    against 2190-2357; seed-cnn's forward and backward 14-18 ms against 21-25 at batch 32, 77-94 against
    107-120 at batch 128. Flags that name YNN_FLAG already are the user's and win
    (`=+individual_convolution` restores XLA's default), and a jaxlib that does not know the flag gets
    none: XLA stops the process at an unknown flag."""
    if YNN_FLAG in flags or not _jaxlib_knows(YNN_FLAG.encode(), b"LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"):
        return flags
    return f"{flags} {NO_YNN_CONVS}".strip()


def _jaxlib_knows(*names: bytes) -> bool:
    """Whether one of the installed jaxlib's libraries holds every name: XLA registers its flags and their
    values there, and reading the files (mapped, ~20 ms) imports nothing."""
    import importlib.util
    import mmap
    from pathlib import Path

    spec = importlib.util.find_spec("jaxlib")
    if spec is None or spec.origin is None:
        return False
    for lib in Path(spec.origin).parent.glob("*.so"):
        try:
            with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if all(m.find(name) >= 0 for name in names):
                    return True
        except (OSError, ValueError):  # unreadable, or empty (mmap refuses a 0-byte file)
            continue
    return False


def eigen_convolutions(flags: str) -> bool:
    """Whether XLA_FLAGS `flags` keep convolutions out of YNNPACK's fusions (NO_YNN_CONVS' setting; of
    several settings of YNN_FLAG, XLA takes the last)."""
    values = [f.split("=", 1)[1] for f in flags.split() if f.startswith(f"--{YNN_FLAG}=")]
    return bool(values) and "-individual_convolution" in values[-1].split(",")


def replaced() -> dict:
    """{name: function} that install() puts in place: the max pool always; the convolution only where
    XLA's convolutions are YNNPACK's, whose kernel gradient is the slow one (XLA_FLAGS as XLA read them
    at start: the engine sets them before JAX starts)."""
    if eigen_convolutions(os.environ.get("XLA_FLAGS", "")):
        return {"max_pool": max_pool}
    return REPLACED


def install() -> bool:
    """Route Keras' JAX max pools, and where replaced() says convolutions, through clsf's functions in
    this process (once); False where CLSF_XLA_GRADIENTS=1 keeps XLA's own gradients, or where a Keras
    other than the one tested here keeps them elsewhere (then training is XLA's: slower, the same)."""
    return os.environ.get(KEEP_XLA) != "1" and replace.replace("keras.src.backend.jax.nn", replaced(), _ORIGINAL)


def gradients() -> dict:
    """{"conv": ..., "max_pool": ...}: whose gradient each runs in this process, "clsf" or "xla" (env.json)."""
    return {name: "clsf" if replace.in_place("keras.src.backend.jax.nn", {name: fn}) else "xla"
            for name, fn in REPLACED.items()}


def installed() -> bool:
    return replace.in_place("keras.src.backend.jax.nn", replaced())
