"""env.json's facts about where a run trained (packages, machine, git commit), and the process's peak memory."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def environment(engine: str, device: str, facts: dict | None = None) -> dict:
    """env.json's start: package versions, machine, git commit, and the engine's own `facts`
    (threads, devices: Engine.environment())."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("clsf", "numpy", "tensorflow-cpu", "tensorflow", "keras", "torch", "jax", "jaxlib", "pillow", "matplotlib",
                "pyyaml"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "engine": engine, "device": device, "python": platform.python_version(),
        "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "threads": None, **(facts or {}), "packages": versions, "git_commit": commit,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def peak_memory_mb() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
