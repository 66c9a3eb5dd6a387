"""Build a Keras 3 model from a ModelSpec: functional API, layer names from the spec, logits out.

Initialisation follows `spec.init` (see `initializers`); the torch builder applies the same rule.
"""

from __future__ import annotations

import zlib

from clsf.models.spec import (Activation, ActivityPenalty, AvgPool, BatchNorm, Conv, ConvTranspose, Dense,
                              DepthwiseConv, Dropout, Flatten, GlobalAvgPool, GlobalMaxPool, MaxPool, ModelSpec, Reshape,
                              Residual, Scale, SqueezeExcite, dirac, pool_stride, validate, walk)


def activation(name: str, alpha: float = 0.2):
    import keras

    if name == "linear":
        return None
    if name == "leaky_relu":
        return lambda x: keras.activations.leaky_relu(x, negative_slope=alpha)
    if name == "gelu":
        return "gelu"  # Keras' exact form (approximate=False, its default): torch's nn.GELU; a name, so .keras files reload
    if name == "softmax":
        return lambda x: keras.activations.softmax(x, axis=-1)
    return name  # relu, sigmoid, tanh, elu, swish, relu6, hard_swish, hard_sigmoid: same definitions in both frameworks


def initializers(init: str, fan_in: int, seed=None):
    """(kernel_initializer, bias_initializer) for a layer with `fan_in` inputs per output."""
    import keras

    if init == "glorot_uniform":
        return keras.initializers.GlorotUniform(seed), "zeros"
    if init == "he_uniform":
        return keras.initializers.HeUniform(seed), "zeros"
    # torch_default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)) for the kernel and the bias
    bound = fan_in**-0.5
    return (keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed),
            keras.initializers.RandomUniform(-bound, bound, seed))


def _regularizer(layer):
    """Keras' L1L2 on the kernel (l1 * sum|W| + l2 * sum(W^2)), or none."""
    import keras

    l1, l2 = getattr(layer, "l1", 0.0), getattr(layer, "l2", 0.0)
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


_PENALTY = []


def activity_penalty_class():
    """The add_loss example layer as a Keras layer (made once, registered so .keras files reload)."""
    if not _PENALTY:
        import keras

        @keras.saving.register_keras_serializable(package="clsf")
        class ActivityPenalty(keras.layers.Layer):
            def __init__(self, rate: float, **kwargs):
                super().__init__(**kwargs)
                self.rate = rate

            def call(self, x):
                self.add_loss(self.rate * keras.ops.sum(x))  # picked up by fit and by the tf loop (model.losses)
                return x

            def get_config(self):
                return {**super().get_config(), "rate": self.rate}

        _PENALTY.append(ActivityPenalty)
    return _PENALTY[0]


_SCALED_BN = []


def scaled_bias_batch_norm_class():
    """Batch norm adding bias_scale * beta (beta the stored weight) after the normalisation (made once,
    registered so .keras files reload). Keras' own beta is switched off (center=False)."""
    if not _SCALED_BN:
        import keras

        @keras.saving.register_keras_serializable(package="clsf")
        class ScaledBiasBatchNorm(keras.layers.BatchNormalization):
            def __init__(self, bias_scale: float = 1.0, **kwargs):
                kwargs["center"] = False
                super().__init__(**kwargs)
                self.bias_scale = bias_scale

            def build(self, input_shape):
                super().build(input_shape)
                self.beta = self.add_weight(shape=(input_shape[-1],), name="beta", initializer="zeros", trainable=True)

            def call(self, inputs, training=None, mask=None):
                out = super().call(inputs, training=training, mask=mask)
                return out + keras.ops.cast(self.beta, out.dtype) * self.bias_scale

            def get_config(self):
                return {**super().get_config(), "bias_scale": self.bias_scale}

        _SCALED_BN.append(ScaledBiasBatchNorm)
    return _SCALED_BN[0]


_FROZEN_BN = []


def frozen_batch_norm_class():
    """Batch norm that normalises by its moving statistics in training too and never updates them,
    its scale and shift still training (the spec's BatchNorm.frozen; made once, registered so .keras
    files reload). Keras' own trainable=False freezes the scale and shift as well."""
    if not _FROZEN_BN:
        import keras

        @keras.saving.register_keras_serializable(package="clsf")
        class FrozenStatsBatchNorm(keras.layers.BatchNormalization):
            def call(self, inputs, training=None, mask=None):
                return super().call(inputs, training=False, mask=mask)

        _FROZEN_BN.append(FrozenStatsBatchNorm)
    return _FROZEN_BN[0]


_PAD = []


def pad_class():
    """Constant padding of an NHWC map by (top, bottom, left, right) pixels with any value (made once,
    registered so .keras files reload): -inf before a max pool, so padding never wins a max as in
    torch's padded pooling; Keras' ZeroPadding2D pads zeros only."""
    if not _PAD:
        import keras

        @keras.saving.register_keras_serializable(package="clsf")
        class Pad2D(keras.layers.Layer):
            def __init__(self, pads=(0, 0, 0, 0), value: float = 0.0, **kwargs):
                super().__init__(**kwargs)
                self.pads, self.value = tuple(int(p) for p in pads), float(value)

            def call(self, x):
                t, b, left, r = self.pads
                return keras.ops.pad(x, [[0, 0], [t, b], [left, r], [0, 0]], constant_values=self.value)

            def compute_output_shape(self, shape):
                t, b, left, r = self.pads
                grow = lambda n, extra: None if n is None else n + extra  # noqa: E731
                return (shape[0], grow(shape[1], t + b), grow(shape[2], left + r), shape[3])

            def get_config(self):
                return {**super().get_config(), "pads": list(self.pads), "value": self.value}

        _PAD.append(Pad2D)
    return _PAD[0]


_SUBSAMPLE = []


def subsample_class():
    """Every s-th row and column of an NHWC map (made once, registered so .keras files reload): a 1x1
    convolution with stride s is this and a stride-1 one, the same sum, without oneDNN's strided 1x1
    kernel gradient, wrong on few channels (bench/results/observations.md, O16). As models/torch.py's."""
    if not _SUBSAMPLE:
        import keras

        @keras.saving.register_keras_serializable(package="clsf")
        class Subsample2D(keras.layers.Layer):
            def __init__(self, strides=(1, 1), **kwargs):
                super().__init__(**kwargs)
                self.strides = tuple(int(s) for s in strides)

            def call(self, x):
                return x[:, :: self.strides[0], :: self.strides[1], :]

            def compute_output_shape(self, shape):
                cut = lambda n, s: None if n is None else -(-n // s)  # noqa: E731  ceil(n / s)
                return (shape[0], cut(shape[1], self.strides[0]), cut(shape[2], self.strides[1]), shape[3])

            def get_config(self):
                return {**super().get_config(), "strides": list(self.strides)}

        _SUBSAMPLE.append(Subsample2D)
    return _SUBSAMPLE[0]


def register_custom_layers() -> None:
    """clsf's own Keras layers, registered so a .keras file using them reloads (safe mode)."""
    activity_penalty_class()
    scaled_bias_batch_norm_class()
    frozen_batch_norm_class()
    pad_class()
    subsample_class()


def _symmetric_pad(x, kernel: int, name: str, value: float = 0.0):
    """PyTorch's padding=(k - 1) // 2 on every side, before a 'valid' Keras convolution or pool."""
    from keras import layers as L

    p = (kernel - 1) // 2
    if not p:
        return x
    if value == 0.0:
        return L.ZeroPadding2D(p, name=name + "_pad")(x)
    return pad_class()((p, p, p, p), value, name=name + "_pad")(x)


def _apply(layer, x, prefix: str, spec: ModelSpec):
    from keras import layers as L

    name = prefix + layer.name
    t = type(layer)
    if t is Residual:
        short = x
        for sub in layer.shortcut:
            short = _apply(sub, short, name + "_", spec)
        for sub in layer.body:
            x = _apply(sub, x, name + "_", spec)
        x = L.Add(name=name + "_add")([x, short])
        act = activation(layer.activation, layer.alpha)
        return L.Activation(act, name=name + "_out")(x) if act else x
    if t is SqueezeExcite:
        s = L.GlobalAveragePooling2D(keepdims=True, name=name + "_squeeze")(x)  # (B, 1, 1, C) channel means
        for sub in layer.body:
            s = _apply(sub, s, name + "_", spec)
        s = L.Activation(activation(layer.gate) or "linear", name=name + "_gate")(s)
        return L.Multiply(name=name + "_excite")([x, s])
    if t in (Conv, ConvTranspose, DepthwiseConv):
        in_ch = x.shape[-1]
        fan_in = layer.kernel**2 * (layer.filters if t is ConvTranspose else in_ch)  # depthwise: Keras' fans
        k_init, b_init = initializers(spec.init, fan_in)
        padding = layer.padding
        if padding == "symmetric":
            x, padding = _symmetric_pad(x, layer.kernel, name), "valid"
        act = activation(layer.activation, layer.alpha)
        if t is DepthwiseConv:
            return L.DepthwiseConv2D(layer.kernel, strides=layer.stride, padding=padding, depth_multiplier=layer.multiplier,
                                     activation=act, use_bias=layer.use_bias, depthwise_initializer=k_init,
                                     bias_initializer=b_init, name=name)(x)
        cls, stride = (L.Conv2D if t is Conv else L.Conv2DTranspose), layer.stride
        if t is Conv and layer.kernel == 1 and stride > 1:  # no padding in any mode (subsample_class says why)
            x, stride = subsample_class()((stride, stride), name=name + "_subsample")(x), 1
        return cls(layer.filters, layer.kernel, strides=stride, padding=padding, activation=act,
                   use_bias=layer.use_bias, kernel_initializer=k_init, bias_initializer=b_init,
                   kernel_regularizer=_regularizer(layer), name=name)(x)
    if t is Dense:
        k_init, b_init = initializers(spec.init, x.shape[-1])
        return L.Dense(layer.units, activation=activation(layer.activation, layer.alpha), use_bias=layer.use_bias,
                       kernel_initializer=k_init, bias_initializer=b_init, kernel_regularizer=_regularizer(layer),
                       name=name)(x)
    if t is ActivityPenalty:
        return activity_penalty_class()(layer.rate, name=name)(x)
    if t is MaxPool:
        padding = layer.padding
        if padding == "symmetric":
            x, padding = _symmetric_pad(x, layer.pool, name, float("-inf")), "valid"
        return L.MaxPooling2D(layer.pool, pool_stride(layer), padding=padding, name=name)(x)
    if t is AvgPool:
        return L.AveragePooling2D(layer.pool, name=name)(x)
    if t is GlobalAvgPool:
        return L.GlobalAveragePooling2D(name=name)(x)
    if t is GlobalMaxPool:
        return L.GlobalMaxPooling2D(name=name)(x)
    if t is Flatten:
        return L.Flatten(name=name)(x)
    if t is Reshape:
        return L.Reshape(layer.shape, name=name)(x)
    if t is Dropout:
        seed = None if _DROPOUT_SEED[0] is None else (_DROPOUT_SEED[0] ^ zlib.crc32(name.encode())) % 2**31
        return L.Dropout(layer.rate, seed=seed, name=name)(x)
    if t is BatchNorm:
        if layer.frozen:
            return frozen_batch_norm_class()(momentum=layer.momentum, epsilon=layer.epsilon, scale=layer.scale, name=name)(x)
        if layer.bias_scale != 1:
            return scaled_bias_batch_norm_class()(layer.bias_scale, momentum=layer.momentum, epsilon=layer.epsilon,
                                                  scale=layer.scale, name=name)(x)
        return L.BatchNormalization(momentum=layer.momentum, epsilon=layer.epsilon, scale=layer.scale, name=name)(x)
    if t is Scale:
        return L.Rescaling(layer.factor, name=name)(x)
    if t is Activation:
        return L.Activation(activation(layer.fn, layer.alpha) or "linear", name=name)(x)
    raise TypeError(f"no Keras builder for {t.__name__}")


_DROPOUT_SEED: list[int | None] = [None]  # while build_keras runs: its dropout_seed


def build_keras(spec: ModelSpec, dropout_seed: int | None = None):
    """dropout_seed: each Dropout layer draws its masks from its own seed state (a model variable,
    so checkpoints carry it), derived from this and the layer's name; None leaves Keras' default
    (TensorFlow: the layer's seed state as well; torch backend: torch's global generator)."""
    from clsf.frameworks import import_keras

    keras = import_keras()  # on the backend this process runs Keras on (TensorFlow if none yet)

    validate(spec)
    inputs = keras.Input(shape=tuple(spec.input_shape), name="input")
    x = inputs
    _DROPOUT_SEED[0] = dropout_seed
    try:
        for layer in spec.layers:
            x = _apply(layer, x, "", spec)
    finally:
        _DROPOUT_SEED[0] = None
    model = keras.Model(inputs, x, name=spec.name)
    for name, layer in walk(spec.layers):
        if isinstance(layer, Conv) and layer.dirac:
            kernel = model.get_layer(name).kernel
            kernel.assign(dirac(keras.ops.convert_to_numpy(kernel)))
        if isinstance(layer, Conv) and layer.frozen:
            model.get_layer(name).kernel.trainable = False  # out of trainable_variables: no gradient, no update, no decay
    return model
