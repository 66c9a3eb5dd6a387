"""Weights in one framework-neutral form, and transfer Keras <-> PyTorch.

The neutral form is `{full layer name: {param: ndarray}}` in Keras' layout:
  conv kernel      (kh, kw, in, out)     torch Conv2d weight           (out, in, kh, kw)
  conv-T kernel    (kh, kw, out, in)     torch ConvTranspose2d weight  (in, out, kh, kw)
  depthwise kernel (kh, kw, in, mult)    torch Conv2d(groups=in) weight (in * mult, 1, kh, kw)
  dense kernel     (in, out)             torch Linear weight           (out, in)
  batch norm       gamma, beta, moving_mean, moving_variance
                                         torch weight, bias, running_mean, running_var
                   (no gamma with scale=False; with bias_scale, beta is the stored weight the layer scales)
A Flatten of an (H, W, C) map yields features in HWC order in Keras and CHW order in torch, so the
rows of the next Dense kernel (and any per-feature batch norm between them) are permuted.
Batch-norm epsilon and momentum come from the spec in both builders (torch momentum = 1 - Keras').
"""

from __future__ import annotations

import zipfile

import numpy as np

from clsf.models.spec import BatchNorm, Conv, ConvTranspose, Dense, DepthwiseConv, Flatten, ModelSpec, leaf_shapes, walk

PARAMS = {
    Conv: ("kernel", "bias"), ConvTranspose: ("kernel", "bias"), Dense: ("kernel", "bias"), DepthwiseConv: ("kernel", "bias"),
    BatchNorm: ("gamma", "beta", "moving_mean", "moving_variance"),
}


def flatten_perms(spec: ModelSpec) -> dict[str, np.ndarray]:
    """{layer name: perm} for layers whose input features come from a Flatten of an (H, W, C) map;
    torch feature j is Keras feature perm[j]."""
    perms, pending, shapes = {}, None, leaf_shapes(spec)
    for name, layer in walk(spec.layers):
        inp, _ = shapes[name]
        if isinstance(layer, Flatten):
            pending = None
            if len(inp) == 3 and inp[2] > 1 and inp[0] * inp[1] > 1:
                h, w, c = inp
                pending = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()
        elif isinstance(layer, Dense):
            if pending is not None:
                perms[name] = pending
            pending = None
        elif isinstance(layer, BatchNorm):
            if pending is not None:
                perms[name] = pending
        elif isinstance(layer, (Conv, ConvTranspose, DepthwiseConv)):
            pending = None
    return perms


def _has_params(layer) -> bool:
    return type(layer) in PARAMS


def param_keys(layer) -> tuple[str, ...]:
    """The neutral weights' names for one layer: no bias without use_bias, no gamma without scale."""
    keys = PARAMS[type(layer)]
    if not getattr(layer, "use_bias", True):
        keys = ("kernel",)
    if not getattr(layer, "scale", True):
        keys = keys[1:]
    return keys


def _keras_variables(model, name: str, layer) -> list:
    """The layer's variables in param_keys order (matched by name: a batch norm with bias_scale
    creates its beta after the moving statistics)."""
    by_name = {v.name.rsplit("/", 1)[-1]: v for v in model.get_layer(name).weights}
    return [by_name[k] for k in param_keys(layer)]


def keras_weights(model, spec: ModelSpec) -> dict[str, dict[str, np.ndarray]]:
    from keras import ops

    out = {}
    for name, layer in walk(spec.layers):
        if _has_params(layer):
            out[name] = {k: np.asarray(ops.convert_to_numpy(v)) for k, v in
                         zip(param_keys(layer), _keras_variables(model, name, layer))}
    return out


def neutral_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """{"layer/param": shape} of every weight in the neutral layout, from the spec alone: what a
    weights.npz of this model holds, so a file can be checked before any framework loads it."""
    shapes, leaves = {}, dict(walk(spec.layers))
    for name, (inp, out) in leaf_shapes(spec).items():
        layer = leaves[name]
        if not _has_params(layer):
            continue
        t = type(layer)
        kernel = {Conv: lambda: (layer.kernel, layer.kernel, inp[-1], layer.filters),
                  ConvTranspose: lambda: (layer.kernel, layer.kernel, layer.filters, inp[-1]),
                  DepthwiseConv: lambda: (layer.kernel, layer.kernel, inp[-1], layer.multiplier),
                  Dense: lambda: (inp[0], layer.units)}.get(t)
        for k in param_keys(layer):
            shapes[f"{name}/{k}"] = kernel() if k == "kernel" else (out[-1],)
    return shapes


def param_layers(spec: ModelSpec) -> list[str]:
    """Names of the layers with weights, in order; the last one is the classifier head."""
    return [name for name, layer in walk(spec.layers) if _has_params(layer)]


def set_keras_weights(model, spec: ModelSpec, weights, only: set[str] | None = None) -> None:
    """Copy neutral weights into the Keras model (every layer with weights, or those in `only`)."""
    for name, layer in walk(spec.layers):
        if _has_params(layer) and (only is None or name in only):
            w = weights[name]
            for k, v in zip(param_keys(layer), _keras_variables(model, name, layer)):
                if tuple(w[k].shape) != tuple(v.shape):
                    raise ValueError(f"layer '{name}': weights of shape {w[k].shape} do not fit this model ({tuple(v.shape)})")
                v.assign(w[k])


def torch_weights(net, spec: ModelSpec) -> dict[str, dict[str, np.ndarray]]:
    perms = flatten_perms(spec)
    out = {}
    for name, layer in walk(spec.layers):
        if not _has_params(layer):
            continue
        m = net.leaf(name)
        m = getattr(m, "op", m)
        t = type(layer)
        if t is BatchNorm:
            d = {"gamma": m.weight, "beta": m.bias, "moving_mean": m.running_mean, "moving_variance": m.running_var}
            d = {k: v.detach().cpu().numpy().copy() for k, v in d.items() if v is not None}
            if name in perms:
                inv = np.argsort(perms[name])
                d = {k: v[inv] for k, v in d.items()}
        else:
            wt = m.weight.detach().cpu().numpy()
            if t is Dense:
                kernel = wt.T  # (in, out), rows in torch feature order
                if name in perms:
                    kernel = kernel[np.argsort(perms[name])]
            elif t is DepthwiseConv:  # (in*mult, 1, kh, kw) -> (kh, kw, in, mult)
                kernel = wt.reshape(-1, layer.multiplier, *wt.shape[2:]).transpose(2, 3, 0, 1)
            else:  # (out,in,kh,kw) -> (kh,kw,in,out) ; conv-T (in,out,kh,kw) -> (kh,kw,out,in)
                kernel = wt.transpose(2, 3, 1, 0)
            d = {"kernel": np.ascontiguousarray(kernel)}
            if m.bias is not None:
                d["bias"] = m.bias.detach().cpu().numpy().copy()
        out[name] = d
    return out


def set_torch_weights(net, spec: ModelSpec, weights, only: set[str] | None = None) -> None:
    """Copy neutral weights into the torch model (every layer with weights, or those in `only`)."""
    import torch

    perms = flatten_perms(spec)
    with torch.no_grad():
        for name, layer in walk(spec.layers):
            if not _has_params(layer) or (only is not None and name not in only):
                continue
            m = net.leaf(name)
            m = getattr(m, "op", m)
            w = weights[name]
            t = type(layer)
            if t is BatchNorm:
                p = perms.get(name)
                for k, target in (("gamma", m.weight), ("beta", m.bias), ("moving_mean", m.running_mean),
                                  ("moving_variance", m.running_var)):
                    if target is None:  # scale=False: no gamma
                        continue
                    v = w[k] if p is None else w[k][p]
                    target.copy_(torch.from_numpy(np.ascontiguousarray(v)))
                continue
            kernel = w["kernel"]
            if t is Dense:
                if name in perms:
                    kernel = kernel[perms[name]]
                value = kernel.T
            elif t is DepthwiseConv:  # (kh, kw, in, mult) -> (in*mult, 1, kh, kw)
                value = kernel.transpose(2, 3, 0, 1).reshape(-1, 1, *kernel.shape[:2])
            else:
                value = kernel.transpose(3, 2, 0, 1)
            if tuple(value.shape) != tuple(m.weight.shape):
                raise ValueError(f"layer '{name}': weights of shape {kernel.shape} do not fit this model")
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(value)))
            if m.bias is not None:
                m.bias.copy_(torch.from_numpy(w["bias"]))


def keras_to_torch(keras_model, net, spec: ModelSpec) -> None:
    set_torch_weights(net, spec, keras_weights(keras_model, spec))


def torch_to_keras(net, keras_model, spec: ModelSpec) -> None:
    set_keras_weights(keras_model, spec, torch_weights(net, spec))


def save_npz(path, weights) -> None:
    np.savez(path, **{f"{layer}/{k}": v for layer, d in weights.items() for k, v in d.items()})


def load_npz(path) -> dict[str, dict[str, np.ndarray]]:
    from clsf.errors import UserError

    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with np.load(path, allow_pickle=False) as z:  # allow_pickle=False: arrays only, never objects
            for key in z.files:
                layer, k = key.rsplit("/", 1)
                out.setdefault(layer, {})[k] = z[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # object arrays (pickles), a damaged or foreign file
        raise UserError(f"{path} is not a clsf weights file ({str(e).splitlines()[0][:120]}); use weights clsf wrote.") from None
    return out
