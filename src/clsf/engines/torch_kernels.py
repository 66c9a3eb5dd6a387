"""Keras-on-torch convolutions and max pools without Keras' two layout copies.

Keras' torch backend gets NHWC maps and computes in torch's NCHW functions. For every convolution it
permutes the map to NCHW and copies it contiguous (`_transpose_spatial_inputs`), then copies it back
into channels-last memory (`_maybe_convert_to_channels_last`), the layout oneDNN convolves in -- two
full copies of each layer's input going forward and two of its gradient coming back. Its max pool
copies the map to NCHW and pools there, handing the next layer a strided view.

But a contiguous NHWC map *is* a channels-last NCHW tensor: `x.permute(0, 3, 1, 2)` is that tensor
without a copy, and the NCHW output permuted back is again contiguous NHWC. So `conv` and `max_pool`
here call the same torch functions on the same memory layout as Keras' convolution does, with the
copies gone: for the same input, the same bits forward and backward (tests/test_torch_kernels.py).
The layers after a max pool then get a contiguous map instead of Keras' strided view, so a whole run
matches Keras' own to float rounding, not bit for bit. Measured on an AMD EPYC (2 cores, fp32):
bench/results/step-profile-keras-torch-layout.md, recipe-engines-speedrun-muon-keras-torch-amd-epyc.md.

`install()` puts them in place of Keras' torch functions (keras.src.backend.torch.nn, which every Keras
convolution, depthwise convolution and max-pooling layer calls) in this process, which the keras-torch
engine owns. What they do not cover -- 1-D and 3-D maps, channels first, symbolic tracing on the meta
device -- goes to Keras' own functions unchanged. CLSF_KERAS_TORCH_COPIES=1 keeps Keras' own (an A/B
for bench/step_profile.py --versus env:CLSF_KERAS_TORCH_COPIES=1).
"""

from __future__ import annotations

import os

from clsf.engines import replace

KEEP_KERAS = "CLSF_KERAS_TORCH_COPIES"
_ORIGINAL = {}  # Keras' own functions, by name, once replaced


def _covered(inputs, data_format) -> bool:
    from keras.src import backend
    from keras.src.backend.torch.core import get_device

    return (inputs.ndim == 4 and backend.standardize_data_format(data_format) == "channels_last"
            and str(get_device()) != "meta")


def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """Keras' torch `conv` (same arguments, same result and gradient), with no layout copies."""
    import torch
    import torch.nn.functional as F
    from keras.src.backend.torch import nn
    from keras.src.backend.torch.core import convert_to_tensor
    from keras.src.utils.argument_validation import standardize_tuple

    if not _covered(inputs, data_format):
        return _ORIGINAL["conv"](inputs, kernel, strides, padding, data_format, dilation_rate)
    x = convert_to_tensor(inputs).permute(0, 3, 1, 2)  # (N, C, H, W) over NHWC memory: channels last, no copy
    # (kh, kw, C_in/groups, C_out) -> (C_out, C_in/groups, kh, kw) in channels-last memory, as Keras' own
    w = convert_to_tensor(kernel).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    strides = standardize_tuple(strides, 2, "strides")
    dilation_rate = standardize_tuple(dilation_rate, 2, "dilation_rate")
    if x.shape[1] % w.shape[1] != 0:  # Keras' own check, in its words
        raise ValueError(f"Input channels ({x.shape[1]}) must be divisible by kernel input channels ({w.shape[1]})")
    if padding == "same":  # symmetric pads go to conv2d, others pad the map (Keras' own rule)
        x, padding = nn._apply_same_padding(x, w.shape[2:], strides, "channels_last", "conv", dilation_rate)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        padding = 0
    y = F.conv2d(x, w, stride=strides, padding=padding, dilation=dilation_rate, groups=x.shape[1] // w.shape[1])
    return y.permute(0, 2, 3, 1)  # channels-last NCHW -> contiguous NHWC, no copy


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Keras' torch `max_pool` (same arguments, same result and gradient), pooling in channels-last
    memory instead of a copy to NCHW."""
    import torch
    import torch.nn.functional as F
    from keras.src.backend.torch import nn
    from keras.src.backend.torch.core import convert_to_tensor
    from keras.src.utils.argument_validation import standardize_tuple

    if not _covered(inputs, data_format):
        return _ORIGINAL["max_pool"](inputs, pool_size, strides, padding, data_format)
    x = convert_to_tensor(inputs).permute(0, 3, 1, 2)
    pool_size = standardize_tuple(pool_size, 2, "pool_size")
    strides = pool_size if strides is None else standardize_tuple(strides, 2, "strides")
    if padding == "same":
        x, padding = nn._apply_same_padding(x, pool_size, strides, "channels_last", "pooling")
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        padding = 0
    return F.max_pool2d(x, kernel_size=pool_size, stride=strides, padding=padding).permute(0, 2, 3, 1)


REPLACED = {"conv": conv, "max_pool": max_pool}


def install() -> bool:
    """Route Keras' torch convolutions and max pools through `conv` and `max_pool` in this process
    (once); False where CLSF_KERAS_TORCH_COPIES=1 keeps Keras' own, or where a Keras other than the one
    tested here keeps them elsewhere (then training is Keras' own: slower, the same)."""
    return os.environ.get(KEEP_KERAS) != "1" and replace.replace("keras.src.backend.torch.nn", REPLACED, _ORIGINAL,
                                                                 needs=("_apply_same_padding",))


def installed() -> bool:
    return replace.in_place("keras.src.backend.torch.nn", REPLACED)
