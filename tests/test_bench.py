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


@pytest.mark.parametrize("flags, says", [
    ("fpu avx2 fma amx_bf16 amx_tile avx512f avx512_bf16", "with AMX (bf16)"),
    ("fpu avx2 fma avx512f avx512_bf16", "with AVX-512 and bf16"),
    ("fpu avx2 fma avx512f", "with AVX-512"),
    ("fpu avx2 fma", "with AVX2"),
])
def test_every_bench_table_names_the_cpus_widest_units(tmp_path, flags, says):
    # Virtual machines call CPUs a generation apart "AMD EPYC"; the units tell them apart.
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n")
    r = subprocess.run([sys.executable, "-c", f"from common import cpu_model; print(cpu_model({str(info)!r}))"],
                       cwd=BENCH, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == f"AMD EPYC {says}", r.stderr[-2000:]
