"""What the bench scripts share: the machine's description, min/median/max, and a whole `clsf train`
process timed the way every table times it. Scripts run as `python bench/NAME.py`, so this folder is
on the import path and they import it as `common`.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from clsf.engines.precision import cpu_flags

HERE = Path(__file__).resolve().parent


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and its widest matrix units (speed differs 2-3x between machines: every
    table names it). Virtual machines may report only "AMD EPYC" for CPUs a generation apart: with
    AVX2 alone a speedrun step in fp32 took 9.2 s at batch 2000, with AVX-512 and bf16 6.7 s in fp32
    and 3.8 s in bf16 (bench/results/step-profile-speedrun-muon-avx512-bf16.md), so the flags go
    with the name."""
    try:
        text = Path(cpuinfo).read_text()
        name = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        return platform.processor() or platform.machine()
    flags = cpu_flags(cpuinfo)
    units = ("with AMX (bf16)" if "amx_bf16" in flags else "with AVX-512 and bf16" if "avx512_bf16" in flags
             else "with AVX-512" if "avx512f" in flags else "with AVX2" if "avx2" in flags else "")
    return f"{name} {units}".strip()


def machine() -> str:
    """One line for a table's header: CPU, cores, Python."""
    return f"{cpu_model()}, {os.cpu_count()} CPU cores, python {platform.python_version()}"


def versions() -> dict:
    """The installed frameworks' versions (read in a fresh process: importing them here would load them)."""
    code = ("import json, numpy, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('numpy', 'torch', 'tensorflow-cpu', 'keras', 'jax') if any(d.metadata['Name'] == p for d in m.distributions())}))")
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def med(values) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt(m, digits=0, unit="") -> str:
    """A `med` triple as 'median (min-max)'."""
    return f"{m[0]:,.{digits}f}{unit} ({m[1]:,.{digits}f}-{m[2]:,.{digits}f})"


def timed_process(cmd: list[str]) -> tuple[float, str]:
    """A whole process's wall-clock seconds (start-up and imports included) and its stdout."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return seconds, r.stdout


def clsf_run(root: Path, name: str, recipe: str, engine: str, data: str, epochs: int, *extra: str) -> dict:
    """`clsf train --recipe RECIPE` as a whole process: its seconds, test accuracy and what it trained at."""
    cmd = [sys.executable, "-m", "clsf", "train", "--recipe", recipe, "--engine", engine, "--data", data, "--epochs", str(epochs),
           "--runs-dir", str(root), "--run-name", name, "--quiet", *extra]
    print("$", " ".join(cmd[2:]), flush=True)
    seconds, _ = timed_process(cmd)
    rows = list(csv.DictReader(open(root / name / "metrics.csv")))
    final = json.loads((root / name / "final.json").read_text())
    precision = json.loads((root / name / "env.json").read_text()).get("precision", "fp32")  # what auto resolved to
    return {"name": name, "recipe": recipe, "epochs": epochs, "seconds": seconds, "test_acc": final["test_acc"], "precision": precision,
            "train_seconds": sum(float(r["seconds"]) for r in rows), "epoch_seconds": [float(r["seconds"]) for r in rows],
            "images_per_s": float(rows[-1]["images_per_s"])}


def bracket(run: dict, before: dict, after: dict) -> None:
    """Give a run the two budget runs around its round: `budget`, their mean, is what the tables divide
    by; `around` keeps both for drift_note."""
    run["around"] = (before["seconds"], after["seconds"])
    run["budget"] = statistics.mean(run["around"])


def drift_note(runs: dict[str, list[dict]], limit: float = 0.2) -> str:
    """A sentence for the runs whose two budget runs differ by more than `limit` of the faster (the
    machine's speed moved during that round, and dividing by the mean hides by how much), with each
    such run's ratio to either budget run alone; "" when there are none."""
    moved = [f"{name} run {i + 1}: {r['around'][0]:.0f} and {r['around'][1]:.0f} s around it, "
             f"{r['seconds'] / max(r['around']):.2f}-{r['seconds'] / min(r['around']):.2f}x"
             for name, rs in runs.items() for i, r in enumerate(rs) if max(r["around"]) > (1 + limit) * min(r["around"])]
    if not moved:
        return ""
    return (f"The machine's speed moved during {len(moved)} run(s): the two budget runs around each differ by more "
            f"than {limit:.0%}, so its ratio to their mean is uncertain by as much; against either budget run alone: "
            f"{'; '.join(moved)}.")


def budget_run(data: str, seed: int = 0) -> dict:
    """The budget: the classic Keras CIFAR-10 tutorial's 5-epoch script (bench/recipes.py's), one whole
    process; its seconds, test accuracy and last validation accuracy."""
    print(f"the tutorial's script (the budget), seed {seed}", flush=True)
    seconds, out = timed_process([sys.executable, str(HERE / "recipes.py"), "--seeds-script", str(seed), "--data", data])
    return {"seconds": seconds, "seed": seed, **json.loads(out.strip().splitlines()[-1])}
