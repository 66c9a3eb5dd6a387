"""Lazy framework imports. TF and torch are imported only inside code that needs them (they clash
when both live in one process, and importing TF costs seconds)."""

from __future__ import annotations

import contextlib
import importlib.util
import os

from clsf.errors import UserError


_ALLOCATOR = []  # set once per process


def keep_freed_memory() -> bool:
    """glibc's malloc hands blocks above 32 MiB back to the OS on every free and maps them again on the
    next allocation: a network's activations (freed and allocated every step) then cost page faults,
    not arithmetic. Raising the mmap and trim thresholds keeps freed memory for reuse (the process's
    memory stays at its peak). Measured (bench/results/allocator.md): EfficientNet-Lite0 at 128 px in
    torch, inference 2.1x and training 1.1x faster; airbench's small maps, no change. Linux with glibc only;
    CLSF_MALLOC=default leaves malloc as it is. Returns whether it was set."""
    if _ALLOCATOR:
        return _ALLOCATOR[0]
    done = False
    if os.environ.get("CLSF_MALLOC", "") != "default" and os.uname().sysname == "Linux":
        import ctypes

        try:
            libc = ctypes.CDLL(None)
            M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
            done = bool(libc.mallopt(M_MMAP_THRESHOLD, 2**31 - 1)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
        except (OSError, AttributeError):  # not glibc (musl, another libc): nothing to set
            done = False
    _ALLOCATOR.append(done)
    return done


def require(module: str, extra: str | None = None) -> None:
    """A clear message instead of an ImportError when a framework's extra is not installed."""
    if importlib.util.find_spec(module) is None:
        extra = extra or {"tensorflow": "tf"}.get(module, module)  # the extras: tf, torch, jax, keras
        raise UserError(f"{module} is not installed; install it with pip install 'clsf[{extra}]'.")


@contextlib.contextmanager
def _quiet_stderr():
    # TF's C++ runtime prints start-up notices (oneDNN, absl) straight to file descriptor 2 during
    # import, whatever TF_CPP_MIN_LOG_LEVEL says; hide them for the import only.
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


ONEDNN, CHOSEN = "TF_ENABLE_ONEDNN_OPTS", "CLSF_ONEDNN"  # TF's switch; what clsf set it to (not the user)


def default_onednn(on: bool) -> None:
    """TF_ENABLE_ONEDNN_OPTS for this process's TensorFlow import (TF reads it once), unless the user
    exported it. clsf marks its own value (CLSF_ONEDNN), so a process it starts, which inherits the
    variable, chooses afresh for its own network instead of taking the parent's choice for the user's."""
    value = os.environ.get(ONEDNN)
    if value is not None and os.environ.get(CHOSEN) != value:
        return  # the user's
    os.environ[ONEDNN] = os.environ[CHOSEN] = "1" if on else "0"


def import_tf():
    """Import tensorflow quietly and return it."""
    require("tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TF turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI/bf16 or AMX; on an AVX2
    # machine it falls back to Eigen's kernels, and an airbench step trained 1.8x slower in tf, 2.1x in
    # keras (bench/results/observations.md, O13). An engine chooses first, by its network
    # (engines.tf_kernels.choose_tf_kernels); TF_ENABLE_ONEDNN_OPTS exported by the user wins.
    if ONEDNN not in os.environ:
        default_onednn(True)
    import sys

    if "tensorflow" not in sys.modules:
        with _quiet_stderr():
            import tensorflow  # noqa: F401
    import tensorflow as tf

    return tf


KERAS_BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}  # Keras backend -> the package it needs


def import_keras(backend: str | None = None):
    """Keras on `backend` (None: the backend Keras already runs on in this process, else TensorFlow).
    Keras reads KERAS_BACKEND once, at its first import, so a process holds one backend: asking for
    another after that is refused in one line (each engine runs in its own process for this)."""
    import sys

    have = sys.modules.get("keras")
    if have is not None:
        current = have.backend.backend()
        if backend is not None and current != backend:
            raise UserError(f"this process already runs Keras on the {current} backend and Keras cannot switch to "
                            f"{backend}; run the engine in a process of its own (the clsf command, compare and sweep do).")
        return have
    backend = backend or "tensorflow"
    require(KERAS_BACKENDS[backend])
    require("keras", {"tensorflow": "tf", "jax": "jax"}.get(backend, "keras"))
    os.environ["KERAS_BACKEND"] = backend  # before the import: a KERAS_BACKEND the user exported must not win
    if backend == "tensorflow":
        import_tf()
    with _quiet_stderr() if backend == "jax" else contextlib.nullcontext():  # XLA's start-up notices
        import keras
    return keras
