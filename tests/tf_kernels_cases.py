"""The tf engines' fused batch norm (clsf.engines.tf_kernels.batch_norm_call) against Keras' own
BatchNormalization.call, case by case: output, gradients (input, scale, shift) and moving statistics.

Run as a script by test_tf_kernels.py, in a process of its own for each of TensorFlow's CPU kernel
sets (TF_ENABLE_ONEDNN_OPTS=1 or 0, chosen at TensorFlow's import; the suite's own process runs Eigen's).
Prints one line per case and exits 1 on the first difference."""

import itertools
import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def layer_for(kind: str, policy: str, momentum: float, epsilon: float):
    """A built batch norm of `kind` over 5 channels: Keras' own, or clsf's scaled-bias / frozen ones."""
    import keras

    from clsf.models.keras import frozen_batch_norm_class, scaled_bias_batch_norm_class

    kw = dict(momentum=momentum, epsilon=epsilon, dtype=policy)
    layer = {"keras": lambda: keras.layers.BatchNormalization(**kw),
             "no-scale": lambda: keras.layers.BatchNormalization(scale=False, **kw),
             "scaled-bias": lambda: scaled_bias_batch_norm_class()(0.5, **kw),  # center=False, its own beta
             "frozen": lambda: frozen_batch_norm_class()(**kw)}[kind]()
    layer.build((None, 3, 3, 5))
    rng = np.random.default_rng(1)
    for w in layer.weights:  # nothing at its initial value: a swapped or dropped term shows
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    return layer


def outcome(layer, x, training: bool, trainable: bool):
    """layer(x)'s output, the gradients of a loss unlike it, and the moving statistics after."""
    import tensorflow as tf

    start = [w.numpy() for w in layer.weights]
    layer.trainable = trainable
    weights = [w.value for w in layer.trainable_weights]
    mix = tf.constant(np.random.default_rng(2).normal(size=x.shape), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.sin(tf.cast(y, tf.float32)) * mix)
    grads = tape.gradient(loss, [x, *weights])
    moving = [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
    for w, v in zip(layer.weights, start):  # as it was, for the other call
        w.assign(v)
    layer.trainable = True
    return [np.asarray(tf.cast(t, tf.float32)) for t in (y, *grads)] + moving


def main() -> int:
    import keras
    import tensorflow as tf
    from keras.src.layers.normalization.batch_normalization import BatchNormalization

    from clsf.engines import tf_kernels

    print(f"oneDNN: {tf_kernels.onednn_enabled()}")
    own = BatchNormalization.call
    assert tf_kernels.install_fused_batch_norm() and tf_kernels.fused_batch_norm_installed()
    fused = BatchNormalization.call
    assert fused is tf_kernels.batch_norm_call and tf_kernels._ORIGINAL["call"] is own

    rng = np.random.default_rng(0)
    # (2, 3, 3, 5): 18 values a channel, so Bessel's n/(n-1) is 1.06; the last channel's spread is
    # 1e-4, so an epsilon raised from 1e-12 to 1e-5 would show
    x = rng.normal(0.3, 2.0, (2, 3, 3, 5)) * np.array([1, 1, 1, 1, 1e-4])
    cases = itertools.product(["keras", "no-scale", "scaled-bias", "frozen"], ["float32", "mixed_bfloat16"],
                              [(True, True), (False, True), (True, False)], [(0.0, 1e-12), (0.9, 1e-3)])
    for kind, policy, (training, trainable), (momentum, epsilon) in cases:
        layer = layer_for(kind, policy, momentum, epsilon)
        dtype = keras.mixed_precision.DTypePolicy(policy).compute_dtype
        xt = tf.constant(x, dtype)
        assert tf_kernels._fused_covers(layer, xt, None)
        BatchNormalization.call = own  # the subclasses reach it through super().call
        a = outcome(layer, xt, training, trainable)
        BatchNormalization.call = fused
        b = outcome(layer, xt, training, trainable)
        # float32: rounding; bf16: the output and input gradient round to bf16 (8 bits) on both sides
        tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=2e-2, atol=2e-2)
        names = ["output", "input gradient", *[f"gradient of {w.name}" for w in layer.trainable_weights if trainable],
                 "moving mean", "moving variance"]
        assert len(names) == len(a) == len(b)
        case = f"{kind}, {policy}, training={training}, trainable={trainable}, momentum={momentum}, epsilon={epsilon}"
        for name, u, v in zip(names, a, b):
            # moving statistics and the weights' gradients are float32 sums on both sides: tight
            t = tol if name in ("output", "input gradient") else dict(rtol=1e-3, atol=1e-5)
            try:
                np.testing.assert_allclose(v, u, **t, err_msg=f"{case}: {name} differs from Keras' own")
            except AssertionError as e:
                print(e)
                return 1
        print(f"ok {case}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
