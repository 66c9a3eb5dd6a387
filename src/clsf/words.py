"""Counted nouns in what clsf prints: "1 epoch", "2 epochs"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
