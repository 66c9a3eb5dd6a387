"""How numbers read in reports and summaries: one place for the tables, the pages and the CLI's lines."""

from __future__ import annotations


def fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def pm(ms: tuple, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std' (or just the mean with one value, '-' with none)."""
    mean, std = ms
    if mean is None:
        return "-"
    return f"{mean * scale:.{digits}f}" + (f" ± {std * scale:.{digits}f}" if std is not None else "")
