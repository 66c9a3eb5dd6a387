"""The precision a run computes in (cfg.precision): fp32, or bf16/fp16 mixed precision where a unit
computes in it -- a GPU, or a CPU with bf16 matrix instructions, read from its flags."""

from __future__ import annotations

import os
from pathlib import Path

from clsf.config import Config
from clsf.errors import UserError

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of x86 CPUs with bf16 matrix instructions


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 matrices natively (Intel AMX or AVX512-BF16), read from its flags.

    Where it cannot tell (another OS, another architecture) it says no, and bf16 stays a GPU option."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path(cpuinfo).read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return False
    return any(f in flags for f in CPU_BF16_FLAGS)


def resolve_precision(cfg: Config, on_gpu: bool, device: str) -> str:
    """The precision a run computes in: cfg.precision, or for `auto` bf16 where the device computes in
    it (a GPU; a CPU with bf16 matrix instructions, where oneDNN runs the convolutions and matmuls in
    bf16: measured in docs/speed.md) and fp32 elsewhere. Mixed precision
    where no unit computes in it only costs casts, so it is refused."""
    if cfg.precision == "auto":
        return "bf16" if on_gpu or cpu_has_bf16() else "fp32"
    if cfg.precision == "fp32" or on_gpu or (cfg.precision == "bf16" and cpu_has_bf16()):
        return cfg.precision
    if cfg.precision == "bf16":
        raise UserError(f"precision=bf16 needs a GPU or a CPU with bf16 matrix instructions ({' or '.join(CPU_BF16_FLAGS)}), "
                        f"and this run is on a {device} without them; use precision=fp32 (the default) or precision=auto.")
    raise UserError(f"precision={cfg.precision} is for GPUs and this run is on {device}; "
                    "use precision=fp32 (the default), precision=auto (bf16 where the CPU computes in it), "
                    "or run where a GPU is found (device=auto).")


# -- TensorFlow's CPU kernels: oneDNN or Eigen, chosen once per process, at TensorFlow's import
NARROW = 8  # channels: oneDNN's x86 kernels work on blocks of 8 floats (AVX2) or 16 (AVX-512)


def narrow_convolutions(spec) -> list[str]:
    """The convolutions of `spec` with fewer than NARROW output channels."""
    from clsf.models.spec import Conv, ConvTranspose, DepthwiseConv, leaf_shapes, walk

    convs = {name for name, layer in walk(spec.layers) if isinstance(layer, (Conv, ConvTranspose, DepthwiseConv))}
    return [name for name, (_, out) in leaf_shapes(spec).items() if name in convs and out[-1] < NARROW]


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs oneDNN's kernels (TF has no public way to ask)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"


def choose_tf_kernels(spec, before_import: bool) -> None:
    """oneDNN for TensorFlow unless the network has a convolution under 8 channels wide.

    TF 2.21 turns oneDNN on by itself only on CPUs with AVX-512 VNNI/bf16 or AMX; on an AVX2 CPU its
    Eigen kernels trained an airbench step 1.8x slower in tf and 2.1x in keras (observations.md, O13).
    But there oneDNN computed a narrow network's gradients wrong -- resnet-s 4 channels wide: a
    kernel's gradient changed by 100% between two calls on the same batch (O14) -- so such a network
    keeps Eigen, as torch keeps NCHW for it (O2). Before TensorFlow's import (`before_import`) this
    sets the default (a TF_ENABLE_ONEDNN_OPTS the user exported wins); after it, a narrow network on
    oneDNN is refused in one line."""
    narrow = narrow_convolutions(spec)
    if before_import:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0" if narrow else "1")
    elif narrow and onednn_enabled():
        raise UserError(f"TensorFlow runs oneDNN's kernels in this process, which computed wrong gradients for "
                        f"convolutions under {NARROW} channels wide ({', '.join(narrow[:3])}); export "
                        "TF_ENABLE_ONEDNN_OPTS=0 or run this model in a new process (the clsf command does), or widen it.")
