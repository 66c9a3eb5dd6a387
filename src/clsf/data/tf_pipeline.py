"""tf.data pipelines: uint8 arrays in memory -> shuffled, batched, augmented, normalised, prefetched.

The order is a uniform permutation (`clsf.data.order`), never a shuffle buffer: on class-sorted
sources (the CIFAR JPEG folders are) a 10,000-image buffer over 40,000 images gives batches of one
or two classes, and the model learns the batch, not the image. Batches are gathered from the
uint8 array in one op (no per-image pipeline work); crops and flips come from the same plan the
torch pipeline uses.
"""

from __future__ import annotations

import numpy as np

from clsf.data.order import batch_plans, epoch_plan
from clsf.data.stream import Files
from clsf.data.transforms import Preprocess
from clsf.distributed import share
from clsf.techniques import crop_flip


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, pre: Preprocess, training: bool,
                 seed: int = 0, epoch: int = 0, first_step: int = 0, classes: int = 0):
    """Batches of (x float32 NHWC normalised, y int64, or (B, classes) float32 soft labels when
    mixed); training batches follow `epoch_plan`, from batch `first_step` on (a run resumed inside
    an epoch)."""
    import tensorflow as tf

    a, b = (tf.constant(v) for v in pre.affine(x.shape[-1]))
    files = isinstance(x, Files)  # streamed: decoded here, in parallel, instead of gathered from memory
    images, labels = (tf.constant(x.paths) if files else tf.constant(x)), tf.constant(y)  # (N,) paths or (N, H, W, C) uint8; (N,) int64
    if training:
        plan = epoch_plan(len(y), pre, seed, epoch)
        skip = first_step * batch_size
        ds = tf.data.Dataset.from_tensor_slices((plan.order[skip:], plan.oy[skip:], plan.ox[skip:], plan.flip[skip:]))
    else:
        ds = tf.data.Dataset.range(len(y))

    def transform(idx, *aug, decoded=None):
        # one gather per batch, uint8 until here (or the batch the files decoded to)
        xb = tf.cast(tf.gather(images, idx) if decoded is None else decoded, tf.float32)
        if training and pre.augments:
            xb = crop_flip.tf(xb, pre.crop_padding, *aug)
        return xb * a + b, tf.gather(labels, idx)

    if files:  # each image read and decoded in parallel, then batched: (idx, *aug, image) -> (B, ...) batches
        shape = x.image_shape
        ds = ds.map(lambda idx, *aug: (idx, *aug, decode_file(tf.gather(images, idx), shape)),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size).map(lambda idx, *rest: transform(idx, *rest[:-1], decoded=rest[-1]),
                                      num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.batch(batch_size).map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    if training and pre.batch:  # each batch zipped with its part of every batch technique's plan
        techniques = batch_plans(len(y), batch_size, pre, seed, epoch, x.shape[1:3])
        parts = tuple(_plan_parts(t, plan, batch_size, first_step) for t, plan in techniques)

        def apply(batch, parts):
            xb, yb = batch
            for (t, _), part in zip(techniques, parts):
                xb, yb = t.tf(xb, yb, part, classes)
            return xb, yb

        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.zip(parts))).map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return finish(ds)


def finish(ds):
    """Every pipeline's last stage: prefetch, with tf.data's autotuning off. Its optimisation thread
    sleeps in periods that double up to 60 s, and an iterator's destructor waits for it to wake, so
    an epoch's iterator that lived past ~41 s ended up to 60 s later with the CPU idle (three of four
    TensorFlow speedrun runs had such an epoch; bench/results/observations.md, O15). Without it, an
    AUTOTUNE map runs as many calls at once as there are cores and the prefetch buffer still grows
    while the step waits: as fast here (bench/results/tf-data-autotune.md)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _plan_parts(technique, plan: dict, batch_size: int, first_step: int):
    """A technique's plan as one element per training batch from `first_step`: a batch of per-image
    rows, or the step's own row."""
    import tensorflow as tf

    if technique.per_image:
        return tf.data.Dataset.from_tensor_slices({k: v[first_step * batch_size:] for k, v in plan.items()}).batch(batch_size)
    return tf.data.Dataset.from_tensor_slices({k: v[first_step:] for k, v in plan.items()})


def decode_file(path, shape):
    """One image file -> (H, W, C) uint8 with PIL's pixels: JPEGs through the accurate integer DCT
    (TF's default differs from PIL by up to 5 levels), PNG/BMP through decode_image."""
    import tensorflow as tf

    raw = tf.io.read_file(path)
    c = shape[2]
    img = tf.cond(tf.io.is_jpeg(raw),
                  lambda: tf.io.decode_jpeg(raw, channels=c, dct_method="INTEGER_ACCURATE"),
                  lambda: tf.io.decode_image(raw, channels=c, expand_animations=False))
    tf.debugging.assert_equal(tf.shape(img), tf.constant(shape), message="streamed images must all have the first image's size")
    return tf.ensure_shape(img, shape)


def make_replica_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, pre: Preprocess, seed: int, epoch: int,
                         first_step: int, replicas: range, total: int):
    """Training batches for some of a tf.distribute run's `total` replicas (this input pipeline's
    `replicas`, e.g. range(2, 4): this worker feeds the global replicas 2 and 3): step by step, each
    replica's share (`clsf.distributed.part`) of the global batch of batch_size x total images of
    `epoch_plan`, in replica order, as tf.distribute hands consecutive elements to local replicas.
    Elements are (x, y, scale): a replica's loss is the sum of its per-image losses times scale
    (1 / global batch images; 0 for an empty share, which gets one stand-in image), so the
    replicas' summed gradients are the gradient of the global batch's mean loss."""
    import tensorflow as tf

    a_, b_ = (tf.constant(v) for v in pre.affine(x.shape[-1]))
    images, labels = tf.constant(x), tf.constant(y)
    plan = epoch_plan(len(y), pre, seed, epoch)
    g = batch_size * total
    starts, sizes, scales = [], [], []
    for start in range(first_step * g, len(y), g):
        stop = min(start + g, len(y))
        for r in replicas:
            a, b, weight = share(start, stop, r, total)
            starts.append(a)
            sizes.append(b - a)
            scales.append(weight)
    order, aug = tf.constant(plan.order), [tf.constant(v) for v in (plan.oy, plan.ox, plan.flip)]
    # batch techniques that keep to each image (cutout; the ones that pair images are refused over replicas)
    techniques = [(t, {k: tf.constant(v) for k, v in p.items()})
                  for t, p in batch_plans(len(y), batch_size * total, pre, seed, epoch, x.shape[1:3])]

    def element(start, size, scale):
        pos = tf.range(start, start + size)
        idx = tf.gather(order, pos)
        xb = tf.cast(tf.gather(images, idx), tf.float32)  # (b, H, W, C): this replica's share
        if pre.augments:
            xb = crop_flip.tf(xb, pre.crop_padding, *(tf.gather(v, pos) for v in aug))
        xb, yb = xb * a_ + b_, tf.gather(labels, idx)
        for t, p in techniques:  # a per-image plan at the share's positions; a per-batch one at its global step
            xb, yb = t.tf(xb, yb, {k: tf.gather(v, pos if t.per_image else start // g) for k, v in p.items()}, 0)
        return xb, yb, scale

    ds = tf.data.Dataset.from_tensor_slices((np.array(starts, np.int64), np.array(sizes, np.int64),
                                             np.array(scales, np.float32)))
    return finish(ds.map(element, num_parallel_calls=tf.data.AUTOTUNE))
