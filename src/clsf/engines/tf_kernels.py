"""TensorFlow's CPU kernels, oneDNN's or Eigen's: chosen once per process, at TensorFlow's import, by
the network the engine builds (see choose_tf_kernels)."""

from __future__ import annotations

import os

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
