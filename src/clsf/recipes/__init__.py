"""Named recipes: YAML files of config keys in this folder, picked with `--recipe NAME`.

A recipe sits between the defaults and everything the user gives (defaults < recipe < --config <
flags < KEY=VALUE), so `--recipe fast-cifar --epochs 30` is the recipe with 30 epochs. Each file
starts with a comment saying what it is for and what it measured (bench/recipes.py).
"""

from __future__ import annotations

from pathlib import Path

from clsf.errors import UserError

HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    """The named recipes (`--recipe NAME`), sorted; `clsf recipes NAME` prints one's config keys."""
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    path = HERE / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"recipe '{name}' is not known; use one of {', '.join(names())} (or --config FILE for your own).")
    return path


def describe(name: str) -> str:
    """The recipe file's first comment line."""
    first = recipe_path(name).read_text().splitlines()[0]
    return first.lstrip("# ").strip()
