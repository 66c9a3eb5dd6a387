"""model.whiten_init: the first convolution initialised by patch whitening (airbench's init).

Its k x k x C input patches, as the network sees them (scaled by the run's data.scale), have an
(uncentred) covariance P^T P / M with eigenvalues l_i and eigenvectors v_i; filter i becomes
v_i / sqrt(l_i + eps), so the layer's outputs on training patches are decorrelated with unit
variance. airbench uses 2 x (k*k*C) filters, +v and -v (its stem: 24 filters on 2x2x3 patches);
a layer of exactly k*k*C filters gets +v alone. Bias 0.

Computed here in numpy (float64) from the first WHITEN_IMAGES training images and loaded into the
engine as neutral weights, so every engine starts from the same bits; a compare's other engines
take them with the first engine's initial weights.
"""

from __future__ import annotations

import tempfile

import numpy as np

from clsf.data.stream import as_array
from clsf.data.transforms import Preprocess, normalize_np
from clsf.engines.checkpoint import Checkpoint
from clsf.errors import UserError
from clsf.models.spec import Conv, ModelSpec, walk
from clsf.models.transfer import param_layers, save_npz

WHITEN_IMAGES = 5000  # images the covariance is estimated from (airbench: 5,000)
EPS = 5e-4  # added to each eigenvalue (airbench's value, for inputs scaled to about unit variance)


def first_conv(spec: ModelSpec) -> tuple[str, Conv]:
    """The layer whiten_init sets (its full name and spec): the network's first layer with weights,
    which must be a convolution with stride 1 and k*k*C or 2*k*k*C filters."""
    name = param_layers(spec)[0]
    layer = dict(walk(spec.layers))[name]
    channels = spec.input_shape[-1]
    if not isinstance(layer, Conv) or layer.stride != 1:
        raise UserError(f"model.whiten_init needs a first convolution with stride 1; model '{spec.name}' starts with "
                        f"'{name}'. Use a model that does (airbench), or leave whiten_init out.")
    d = layer.kernel * layer.kernel * channels
    if layer.filters not in (d, 2 * d):
        raise UserError(f"model.whiten_init: the first convolution '{layer.name}' has {layer.filters} filters; whitening "
                        f"{layer.kernel}x{layer.kernel}x{channels} patches needs {d} or {2 * d} (airbench: 2x).")
    return name, layer


def whitening_kernel(x: np.ndarray, pre: Preprocess, kernel: int, filters: int, eps: float = EPS) -> np.ndarray:
    """(kernel, kernel, C, filters) float32 weights whitening the kernel x kernel patches of uint8
    images x (N, H, W, C) after `pre`'s scaling; filters = k*k*C (+v) or 2*k*k*C (+v, then -v)."""
    c = x.shape[-1]
    d = kernel * kernel * c
    cov = np.zeros((d, d))
    m = 0
    for i in range(0, len(x), 500):  # in chunks: 5,000 CIFAR images make 4.8M patches
        b = normalize_np(x[i:i + 500], pre).astype(np.float64)  # (n, H, W, C) as the network sees them
        p = np.lib.stride_tricks.sliding_window_view(b, (kernel, kernel), axis=(1, 2))  # (n, H-k+1, W-k+1, C, k, k)
        p = p.transpose(0, 1, 2, 4, 5, 3).reshape(-1, d)  # (patches, k*k*C) in the kernel's (kh, kw, cin) order
        cov += p.T @ p
        m += len(p)
    values, vectors = np.linalg.eigh(cov / m)  # ascending; columns are eigenvectors
    values, vectors = values[::-1], vectors[:, ::-1]  # the strongest direction first, as airbench
    scaled = vectors / np.sqrt(np.maximum(values, 0) + eps)  # (d, d): column i = filter i
    w = scaled if filters == d else np.concatenate([scaled, -scaled], axis=1)
    return w.reshape(kernel, kernel, c, filters).astype(np.float32)


def whiten_first_conv(engine, spec: ModelSpec, x: np.ndarray, pre: Preprocess) -> None:
    """Set the engine's first convolution to the whitening of the training images x (uint8)."""
    name, layer = first_conv(spec)
    kernel = whitening_kernel(as_array(x[:WHITEN_IMAGES]), pre, layer.kernel, layer.filters)
    weights = {"kernel": kernel}
    if layer.use_bias:
        weights["bias"] = np.zeros(layer.filters, np.float32)
    with tempfile.TemporaryDirectory() as tmp:  # through the engines' own neutral-weights loading
        save_npz(Checkpoint(tmp).weights, {name: weights})
        engine.load(Checkpoint(tmp), training_state=False, only={name})
