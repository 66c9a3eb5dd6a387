"""Putting clsf's functions in place of a Keras backend's own, in the engine's own process
(jax_kernels, torch_kernels): the one place that knows how, so both replace and report alike."""

from __future__ import annotations

import importlib


def replace(module: str, replaced: dict, original: dict, needs: tuple = ()) -> bool:
    """Put each of `replaced` ({name: function}) in place of `module`'s function of that name, once,
    keeping Keras' own in `original`; False, leaving everything as it was, where the module, one of
    those functions or one of `needs` is missing (a Keras other than the one tested here)."""
    try:
        nn = importlib.import_module(module)
    except ImportError:
        return False
    if not all(callable(getattr(nn, name, None)) for name in (*replaced, *needs)):
        return False
    for name, fn in replaced.items():
        if name not in original:
            original[name] = getattr(nn, name)
            setattr(nn, name, fn)
    return True


def in_place(module: str, replaced: dict) -> bool:
    """Whether every function of `replaced` is the one `module` now calls."""
    try:
        nn = importlib.import_module(module)
    except ImportError:
        return False
    return all(getattr(nn, name, None) is fn for name, fn in replaced.items())
