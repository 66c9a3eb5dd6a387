"""The precision a run computes in (cfg.precision): fp32, or bf16/fp16 mixed precision where a unit
computes in it -- a GPU, or a CPU with bf16 matrix instructions, read from its flags."""

from __future__ import annotations

from pathlib import Path

from clsf.config import Config
from clsf.errors import UserError

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of x86 CPUs with bf16 matrix instructions


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where it cannot tell: another OS)."""
    try:
        return set(next((line.split(":", 1)[1].split() for line in Path(cpuinfo).read_text().splitlines()
                         if line.startswith("flags")), []))
    except OSError:
        return set()


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 matrices natively (Intel AMX or AVX512-BF16), read from its flags.

    Where it cannot tell (another OS, another architecture) it says no, and bf16 stays a GPU option."""
    return any(f in cpu_flags(cpuinfo) for f in CPU_BF16_FLAGS)


def resolve_precision(cfg: Config, on_gpu: bool, device: str, cpu_kernels_bf16: bool = True) -> str:
    """The precision a run computes in: cfg.precision, or for `auto` bf16 where the device computes in
    it (a GPU; a CPU with bf16 matrix instructions, where oneDNN runs the convolutions and matmuls in
    bf16: measured in docs/speed.md) and fp32 elsewhere. `cpu_kernels_bf16` False: the engine's CPU
    kernels do not use those instructions (XLA's: keras-jax), so `auto` stays fp32 on a CPU. Mixed
    precision where no unit computes in it only costs casts, so it is refused."""
    if cfg.precision == "auto":
        return "bf16" if on_gpu or (cpu_kernels_bf16 and cpu_has_bf16()) else "fp32"
    if cfg.precision == "fp32" or on_gpu or (cfg.precision == "bf16" and cpu_has_bf16()):
        return cfg.precision
    if cfg.precision == "bf16":
        raise UserError(f"precision=bf16 needs a GPU or a CPU with bf16 matrix instructions ({' or '.join(CPU_BF16_FLAGS)}), "
                        f"and this run is on a {device} without them; use precision=fp32 (the default) or precision=auto.")
    raise UserError(f"precision={cfg.precision} is for GPUs and this run is on {device}; "
                    "use precision=fp32 (the default), precision=auto (bf16 where the CPU computes in it), "
                    "or run where a GPU is found (device=auto).")
