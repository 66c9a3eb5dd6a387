"""The tf engines' fused batch norm (clsf.engines.tf_kernels.batch_norm_call) against Keras' own
BatchNormalization.call, case by case: output, gradients (input, scale, shift) and moving statistics;
and their gelu (clsf.engines.tf_kernels.gelu) against Keras' own: output and input gradient.

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
    return gelu_cases()


def gelu_cases() -> int:
    """clsf's exact gelu against Keras' own tf.nn.gelu computed in float32 on the same input: to float
    rounding in float32; in bf16 and float16, within the one rounding to that dtype at the end (Keras'
    own rounds each of its ops there). The approximate form and float64 are Keras' own, bit for bit."""
    import keras
    import tensorflow as tf

    from clsf.engines import tf_kernels

    own = tf_kernels._ORIGINAL_NN.get("gelu") or keras.src.backend.tensorflow.nn.gelu
    assert tf_kernels.install_gelu() and tf_kernels.gelu_installed() and tf_kernels._ORIGINAL_NN["gelu"] is own
    rng = np.random.default_rng(3)
    # from -9 (the output ~1e-19: the tail) through 0 to 9, on a map and on a dense layer's output
    values = np.concatenate([np.linspace(-9, 9, 181), rng.normal(0, 2, 249)])
    mix = np.random.default_rng(4).normal(size=430)  # the output's gradient

    def outcome(fn, x, dtype, upstream):
        """fn(x) and its gradient times `upstream` (the output's gradient, as the dtype holds it)."""
        xt = tf.constant(x, dtype)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = fn(xt)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.constant(upstream, tf.float32))
        return [np.asarray(tf.cast(t, tf.float64)) for t in (y, tape.gradient(loss, xt))]

    for dtype, shape, compiled in itertools.product(["float32", "bfloat16", "float16"], [(2, 5, 43, 1), (10, 43)],
                                                    [False, True]):
        def held(a):  # as the dtype holds it
            return np.asarray(tf.cast(tf.constant(a.reshape(shape), dtype), tf.float64))

        x, upstream = held(values), held(mix)
        fn = (lambda t: keras.activations.gelu(t))  # noqa: E731 - what Keras' "gelu" activation calls
        fn = tf.function(fn) if compiled else fn
        ours = outcome(fn, x, dtype, upstream)
        keras_float32 = outcome(lambda t: own(t, False), x, "float32", upstream)
        half_unit = 2.0 ** -8 if dtype == "bfloat16" else 2.0 ** -11  # of the last place (7 or 10 bits after the point)
        case = f"gelu, {dtype}, shape {shape}, {'in a tf.function' if compiled else 'eager'}"
        for name, u, v in zip(["output", "input gradient"], keras_float32, ours):
            # float32: a few roundings; else the one rounding to the dtype at the end. atol: the far
            # left tail, where torch's formula 1 + erf(x/sqrt 2) cancels to float32's resolution
            # (3e-8 of Phi; Keras' own uses erfc, exact there)
            rtol, atol = (1e-5, 1e-6) if dtype == "float32" else (half_unit, 1e-6)
            try:
                np.testing.assert_allclose(v, u, rtol=rtol, atol=atol, err_msg=f"{case}: {name} differs from Keras' own")
            except AssertionError as e:
                print(e)
                return 1
        print(f"ok {case}")
    for x, approximate in [(tf.constant(values, tf.float32), True), (tf.constant(values, tf.float64), False)]:
        case = f"gelu, {x.dtype.name}, approximate={approximate}: Keras' own"
        if not np.array_equal(keras.ops.gelu(x, approximate=approximate).numpy(), own(x, approximate).numpy()):
            print(f"{case}: differs")
            return 1
        print(f"ok {case}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
