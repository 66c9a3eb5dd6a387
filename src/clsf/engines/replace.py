"""Putting clsf's functions in place of a Keras backend's own, in the engine's own process
(jax_kernels, torch_kernels, tf_kernels): the one place that knows how, so both replace and report
alike. A target is a module ("keras.src.backend.torch.nn") or a class in one
("keras.src.layers.normalization.batch_normalization:BatchNormalization", whose methods are replaced)."""

from __future__ import annotations

import importlib
from contextlib import contextmanager


def _target(target: str):
    """The module or class `target` names, or None where it is missing."""
    module, _, cls = target.partition(":")
    try:
        found = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(found, cls, None) if cls else found


def replace(target: str, replaced: dict, original: dict, needs: tuple = ()) -> bool:
    """Put each of `replaced` ({name: function}) in place of `target`'s function of that name, once,
    keeping Keras' own in `original`; False, leaving everything as it was, where the target, one of
    those functions or one of `needs` is missing (a Keras other than the one tested here)."""
    nn = _target(target)
    if nn is None or not all(callable(getattr(nn, name, None)) for name in (*replaced, *needs)):
        return False
    for name, fn in replaced.items():
        if name not in original:
            original[name] = getattr(nn, name)
            setattr(nn, name, fn)
    return True


def in_place(target: str, replaced: dict) -> bool:
    """Whether every function of `replaced` is the one `target` now calls."""
    nn = _target(target)
    return nn is not None and all(getattr(nn, name, None) is fn for name, fn in replaced.items())


@contextmanager
def originals(target: str, original: dict):
    """Inside the `with` block `target` calls Keras' own functions again (those `original` kept when
    replaced), clsf's after it: for what is traced to be kept (an export), not run here."""
    nn = _target(target)
    mine = {name: getattr(nn, name) for name in original} if nn is not None else {}
    try:
        for name, fn in original.items():
            setattr(nn, name, fn)
        yield
    finally:
        for name, fn in mine.items():
            setattr(nn, name, fn)
