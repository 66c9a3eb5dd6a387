"""tf.data pipelines: uint8 arrays in memory -> shuffled, batched, augmented, normalised, prefetched.

Shuffling is over image indices with a buffer as large as the split: a uniform shuffle. A smaller
buffer is not: on class-sorted sources (the CIFAR JPEG folders are) a 10,000-image buffer over
40,000 images gives batches of one or two classes, and the model learns the batch, not the image.
Batches are then gathered from the uint8 array in one op (no per-image pipeline work).

Randomness is stateless and keyed by (seed, epoch, batch), so epoch k of a resumed run sees exactly
the same order and the same crops/flips as epoch k of an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from clsf.data.transforms import Preprocess



def crop_flip_tf(x, pad: int, oy, ox, flip):
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


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, pre: Preprocess, training: bool,
                 seed: int = 0, epoch: int = 0):
    import tensorflow as tf

    a, b = (tf.constant(v) for v in pre.affine(x.shape[-1]))
    n = len(y)
    images, labels = tf.constant(x), tf.constant(y)  # (N, H, W, C) uint8, (N,) int64
    ds = tf.data.Dataset.range(n)
    if training:
        ds = ds.shuffle(n, seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size).map(lambda idx: (tf.gather(images, idx), tf.gather(labels, idx)))
    if training:
        ds = ds.enumerate()  # batch index, for stateless per-batch randomness

    def transform(*args):
        if training:
            i, (xb, yb) = args
        else:
            xb, yb = args
        xb = tf.cast(xb, tf.float32)
        if training and pre.augments:
            key = tf.stack([tf.cast(seed * 100_003 + epoch, tf.int64), i])
            n = tf.shape(xb)[0]
            span = 2 * pre.crop_padding + 1
            oy = tf.random.stateless_uniform([n], key, 0, span, dtype=tf.int32)
            ox = tf.random.stateless_uniform([n], key + [0, 1 << 40], 0, span, dtype=tf.int32)
            flip = tf.random.stateless_uniform([n], key + [0, 2 << 40]) < (0.5 if pre.hflip else 0.0)
            xb = crop_flip_tf(xb, pre.crop_padding, oy, ox, flip)
        return xb * a + b, yb

    return ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
