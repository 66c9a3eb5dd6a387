"""data.crop_padding, data.hflip (data.hflip_alternate): the random crop and the horizontal flip,
applied to each training image before normalisation in every pipeline:

    zero-pad by `pad` pixels -> take the HxW window at (oy[i], ox[i]) -> mirror where flip[i]

Padding comes before normalisation, so padded pixels are black in every scale. The offsets and flips
are drawn once per epoch in numpy with the epoch's order (clsf.data.order.epoch_plan; the alternating
flips too), so every engine crops and flips the same images alike. `numpy` is the reference;
`tf` and `torch` are tested against it bit for bit (tests/test_pipelines.py).
"""

from __future__ import annotations

import numpy as np


def numpy(x: np.ndarray, pad: int, oy: np.ndarray, ox: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Reference: x (N,H,W,C) float -> zero-pad -> crop at (oy[i], ox[i]) -> mirror where flip[i]."""
    n, h, w, _ = x.shape
    p = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.stack([p[i, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)])
    out[flip] = out[flip][:, :, ::-1]
    return out


def tf(x, pad: int, oy, ox, flip):
    """x (B,H,W,C) float32; oy/ox (B,) int32 crop offsets into the padded image; flip (B,) bool."""
    import tensorflow as tf

    h, w = tf.shape(x)[1], tf.shape(x)[2]
    if pad:
        x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        rows = oy[:, None] + tf.range(h)[None, :]  # (B, H)
        cols = ox[:, None] + tf.range(w)[None, :]  # (B, W)
        x = tf.gather(x, rows, axis=1, batch_dims=1)  # (B, H, W+2p, C)
        x = tf.gather(x, cols, axis=2, batch_dims=1)  # (B, H, W, C)
    return tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)


def torch(x, pad: int, oy, ox, flip):
    """x (B,C,H,W) float; oy/ox (B,) long offsets into the padded image; flip (B,) bool."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * pad)
        x = torch.gather(x, 2, rows)  # (B, C, H, W+2p)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
        x = torch.gather(x, 3, cols)  # (B, C, H, W)
    return torch.where(flip[:, None, None, None], x.flip(3), x)
