"""Lazy framework imports. TF and torch are imported only inside code that needs them (they clash
when both live in one process, and importing TF costs seconds)."""

from __future__ import annotations

import contextlib
import importlib.util
import os

from clsf.errors import UserError


def require(module: str) -> None:
    """A clear message instead of an ImportError when a framework's extra is not installed."""
    if importlib.util.find_spec(module) is None:
        extra = "tf" if module in ("tensorflow", "keras") else module  # the extras are named tf and torch
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


def import_tf():
    """Import tensorflow quietly and return it."""
    require("tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import sys

    if "tensorflow" not in sys.modules:
        with _quiet_stderr():
            import tensorflow  # noqa: F401
    import tensorflow as tf

    return tf
