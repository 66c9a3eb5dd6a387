"""Every bench script starts: its imports (bench/common.py and the framework-free parts of clsf)
resolve as `python bench/NAME.py` runs them, and it answers --help. The benchmarks themselves run
on the real data for minutes to hours (bench/results holds what they measured)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in ("common.py", "reference.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bench_script_starts(script):
    r = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage:" in r.stdout, r.stderr[-2000:]
