"""TensorFlow's CPU kernels, oneDNN's or Eigen's: chosen once per process, at TensorFlow's import, by
the network the engine builds (see choose_tf_kernels); and on a CPU, Keras' batch norm as TensorFlow's
fused kernel (see batch_norm_call) and its exact gelu as one compiled loop (see gelu)."""

from __future__ import annotations

import os

from clsf.engines.replace import in_place, originals, replace
from clsf.errors import UserError
from clsf.frameworks import ONEDNN, default_onednn, import_tf
from clsf.models.spec import NARROW, narrow_convolutions


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs oneDNN's kernels (TF has no public way to ask)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return os.environ.get(ONEDNN) == "1"


def choose_tf_kernels(specs: list, before_import: bool) -> None:
    """oneDNN for TensorFlow unless a network of `specs` has a convolution under 8 channels wide.

    TF 2.21 turns oneDNN on by itself only on CPUs with AVX-512 VNNI/bf16 or AMX; on an AVX2 CPU its
    Eigen kernels trained an airbench step 1.8x slower in tf and 2.1x in keras (observations.md, O13).
    But there oneDNN computed a narrow network's gradients wrong -- resnet-s 4 channels wide: a
    kernel's gradient changed by 1.22x its largest entry between two calls on one batch (O14) -- so such a network
    keeps Eigen, as torch keeps NCHW for it (O2). Before TensorFlow's import (`before_import`) this
    sets the default (clsf.frameworks.default_onednn: a TF_ENABLE_ONEDNN_OPTS the user exported wins);
    after it, a narrow network on oneDNN is refused in one line."""
    narrow = [name for spec in specs for name in narrow_convolutions(spec)]
    if before_import:
        default_onednn(not narrow)
    elif narrow and onednn_enabled():
        raise UserError(f"TensorFlow runs oneDNN's kernels in this process, which computed wrong gradients for "
                        f"convolutions under {NARROW} channels wide ({', '.join(narrow[:3])}); export "
                        "TF_ENABLE_ONEDNN_OPTS=0 or run this model in a new process (the clsf command does), or widen it.")


def import_tf_for(specs: list):
    """TensorFlow, imported with the kernels that suit `specs` (chosen here if this is its first import
    in the process, else checked); returns the module."""
    import sys

    choose_tf_kernels(specs, before_import="tensorflow" not in sys.modules)
    tf = import_tf()
    choose_tf_kernels(specs, before_import=False)  # what the import chose must suit these networks
    return tf


KEEP_KERAS_BN = "CLSF_KERAS_TF_BATCH_NORM"  # "1": Keras' own batch norm (an A/B: bench/step_profile.py --versus env:...=1)
BATCH_NORM = "keras.src.layers.normalization.batch_normalization:BatchNormalization"
_ORIGINAL = {}  # Keras' own BatchNormalization.call, once replaced


def _fused_covers(layer, inputs, mask) -> bool:
    """The batch norms batch_norm_call computes itself: TensorFlow's, over the channels of an NHWC map,
    in float32 or bf16, per replica, without renorm or a mask."""
    import keras

    return (keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4 and layer.axis in (-1, 3)
            and mask is None and not layer.renorm and not layer.synchronized
            and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16"))


def batch_norm_call(self, inputs, training=None, mask=None):
    """Keras' BatchNormalization.call (same arguments; the same output, gradients and moving statistics
    to float rounding) as TensorFlow's one fused kernel, FusedBatchNormV3.

    Keras 3 computes a batch norm as separate ops: the map cast to float32, its mean, its variance
    (another pass), the normalisation, a cast back -- each a pass over the map, forward and backward,
    where torch's batch norm is one kernel. The fused kernel reads a bf16 map and computes in float32
    inside (Keras' own reason for the casts). On an AMD EPYC with AVX-512 BF16, in bf16 at batch 2000,
    speedrun-muon's forward pass took 1517 ms fused against 1712 with Keras' batch norm, its backward
    3020 against 3426, the whole step 1.16x as fast: 1.26x torch's time instead of 1.46x
    (bench/results/step-profile-tf-batch-norm-avx512-bf16.md).

    The kernel's batch variance comes Bessel-corrected (for its own moving average); Keras keeps the
    biased one, so it is scaled back. The raw op takes any epsilon (airbench's is 1e-12), where
    tf.nn.fused_batch_norm would raise it to 1.001e-5. What it does not cover goes to Keras' own."""
    if not _fused_covers(self, inputs, mask):
        return _ORIGINAL["call"](self, inputs, training=training, mask=mask)
    import tensorflow as tf

    channels = inputs.shape[-1]
    gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
    beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
    if training and self.trainable:  # batch statistics, the moving ones updated (Keras' rule)
        empty = tf.constant([], tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(x=inputs, scale=gamma, offset=beta, mean=empty,
                                                            variance=empty, epsilon=self.epsilon,
                                                            data_format="NHWC", is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(inputs, out_type=tf.int64)[:-1]), tf.float32)  # values per channel
        variance = variance * tf.where(n > 1, (n - 1) / n, 1.0)  # Bessel's correction undone
        self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(tf.cast(self.moving_variance, tf.float32) * self.momentum
                                    + variance * (1.0 - self.momentum))
    else:  # the moving statistics
        y, *_ = tf.raw_ops.FusedBatchNormV3(x=inputs, scale=gamma, offset=beta,
                                            mean=tf.cast(self.moving_mean, tf.float32),
                                            variance=tf.cast(self.moving_variance, tf.float32),
                                            epsilon=self.epsilon, data_format="NHWC", is_training=False)
    return tf.cast(y, self.compute_dtype)


def install_fused_batch_norm() -> bool:
    """batch_norm_call in place of Keras' BatchNormalization.call in this process (its subclasses, clsf's
    frozen and scaled-bias batch norms, call it through super()); False where CLSF_KERAS_TF_BATCH_NORM=1
    keeps Keras' own or this Keras has no such method."""
    return os.environ.get(KEEP_KERAS_BN) != "1" and replace(BATCH_NORM, {"call": batch_norm_call}, _ORIGINAL)


def fused_batch_norm_installed() -> bool:
    return in_place(BATCH_NORM, {"call": batch_norm_call})


KEEP_KERAS_GELU = "CLSF_KERAS_TF_GELU"  # "1": Keras' own gelu (an A/B: bench/step_profile.py --versus env:...=1)
TF_NN = "keras.src.backend.tensorflow.nn"
_ORIGINAL_NN = {}  # Keras' own tensorflow gelu, once replaced
_EXACT = {}  # the exact gelu below, made at its first call (TensorFlow imported by then)


def _exact_gelu():
    """x * Phi(x) with its gradient Phi(x) + x * phi(x), each one XLA-compiled loop over the map, in
    float32 inside (a bf16 map read and written once); Phi, phi: the standard normal's CDF and density."""
    if "fn" in _EXACT:
        return _EXACT["fn"]
    import tensorflow as tf

    @tf.function(jit_compile=True, reduce_retracing=True)
    def forward(x):
        xf = tf.cast(x, tf.float32)
        return tf.cast(xf * (0.5 + 0.5 * tf.math.erf(xf * 0.7071067811865476)), x.dtype)  # 1/sqrt(2)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def backward(x, dy):
        xf = tf.cast(x, tf.float32)
        cdf = 0.5 + 0.5 * tf.math.erf(xf * 0.7071067811865476)
        pdf = tf.exp(-0.5 * xf * xf) * 0.3989422804014327  # 1/sqrt(2 pi)
        return tf.cast(tf.cast(dy, tf.float32) * (cdf + xf * pdf), x.dtype)

    @tf.custom_gradient
    def exact(x):
        return forward(x), lambda dy: backward(x, dy)

    _EXACT["fn"] = exact
    return exact


def gelu(x, approximate=True):
    """Keras' tensorflow gelu (same arguments, same result to float rounding); its exact form -- what
    Keras' "gelu" activation asks for, torch's nn.GELU -- as one XLA-compiled loop each way.

    TensorFlow computes tf.nn.gelu(approximate=False) as separate elementwise ops, each a pass over
    the map in the map's own dtype (in bf16, each rounded), and differentiates through them. Here the
    forward pass reads the map once, computes x * Phi(x) in float32 and writes it once; the backward
    pass reads the map and its gradient once, as torch's GELU kernels do (torch's formula, with erf).
    On an AMD EPYC with AVX-512 BF16, in bf16 at batch 2000, speedrun-muon's forward pass took 1102
    ms against 1539 with Keras' gelu, the step 4066 against 4725: 1.05x torch's time instead of 1.22x
    (bench/results/step-profile-tf-gelu-avx512-bf16.md).

    The approximate form, float64 and anything else go to Keras' own. An export traces Keras' own
    (keras_own_gelu): a SavedModel holds no XLA-compiled function."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    if approximate or x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
        return _ORIGINAL_NN["gelu"](x, approximate)
    return _exact_gelu()(x)


def install_gelu() -> bool:
    """gelu in place of Keras' tensorflow gelu in this process; False where CLSF_KERAS_TF_GELU=1 keeps
    Keras' own or this Keras has no such function."""
    return os.environ.get(KEEP_KERAS_GELU) != "1" and replace(TF_NN, {"gelu": gelu}, _ORIGINAL_NN)


def gelu_installed() -> bool:
    return in_place(TF_NN, {"gelu": gelu})


def keras_own_gelu():
    """A `with` block in which Keras' own gelu is traced: a SavedModel's graph then holds TensorFlow's
    own ops, not an XLA-compiled function its serving runtime would have to compile."""
    return originals(TF_NN, _ORIGINAL_NN)
