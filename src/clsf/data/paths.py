"""Where clsf looks for data and keeps its caches.

Search order for named datasets: `--data-dir`, then `$CLSF_DATA`, then the user cache
(`$CLSF_CACHE`, else `$XDG_CACHE_HOME/clsf`, else `~/.cache/clsf`) under `data/`. Downloads go to the
first of these that was given (the cache when none was). A relative path given to --data that does
not exist in the current folder is looked for in the same places, so `--data cifar10-jpeg.tar.gz`
with `CLSF_DATA=/data` works from any folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("CLSF_CACHE"):
        return Path(os.environ["CLSF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base).expanduser() / "clsf"


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get("CLSF_DATA"):
        dirs.append(Path(os.environ["CLSF_DATA"]).expanduser())
    dirs.append(cache_root() / "data")
    return dirs
