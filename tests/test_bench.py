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


@pytest.mark.torch
def test_step_profile_rates_each_row_by_its_own_networks_flops(tmp_path):
    """A --versus that widens the network is divided by that network's FLOPs, not the first row's (it
    was: an A/B of widths printed the wider rows' GFLOP/s at the narrower network's FLOPs)."""
    from clsf.models.spec import forward_flops
    from clsf.models.zoo import seed_cnn

    out, batch = tmp_path / "profile.md", 64
    r = subprocess.run([sys.executable, str(BENCH / "step_profile.py"), "--data", "synthetic:train=128,test=8,size=32x32x3,classes=10",
                        "--model", "seed-cnn", "--batch", str(batch), "--steps", "2", "--engines", "torch",
                        "--set", "model.args.widths=[8,8]", "--versus", "model.args.widths=[32,64]", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {cells[0]: cells[1:] for cells in (line.strip("|").split("|") for line in out.read_text().splitlines()
                                              if line.startswith("| torch"))}
    rows = {k.strip(): [c.strip() for c in v] for k, v in rows.items()}
    for label, widths in (("torch", (8, 8)), ("torch model.args.widths=[32,64]", (32, 64))):
        forward, backward, optimizer = (float(rows[label][i]) for i in (1, 2, 3))  # ms; they sum to the step
        rate = float(rows[label][6].split()[0])  # GFLOP/s, printed whole
        own = 3 * forward_flops(seed_cnn(widths=widths)) * batch / ((forward + backward + optimizer) / 1e3) / 1e9
        assert abs(rate - own) <= max(1.0, 0.05 * own), (label, rate, own)


def test_a_round_whose_budget_runs_differ_says_so_in_the_table(tmp_path):
    """Each run is divided by the mean of the budget runs around its round; when those two differ by more
    than 20% (the machine's speed moved) the table says so and gives the ratio to either alone."""
    code = f"""
import argparse
from common import bracket
from recipe_engines import write_table
budgets = [{{"seconds": 113.0, "test_acc": 0.67}}, {{"seconds": 152.0, "test_acc": 0.67}}, {{"seconds": 150.0, "test_acc": 0.67}}]
runs = {{"torch": [{{"seconds": 2000.0, "test_acc": 0.91, "precision": "bf16", "epoch_seconds": [990.0, 1000.0]}},
                  {{"seconds": 2100.0, "test_acc": 0.92, "precision": "bf16", "epoch_seconds": [1040.0, 1050.0]}}]}}
for i, r in enumerate(runs["torch"]):
    bracket(r, budgets[i], budgets[i + 1])
args = argparse.Namespace(recipe="speedrun-muon", overrides=[], data="cifar.tar.gz", epochs=2, out={str(tmp_path / "t.md")!r})
write_table(args, budgets, runs, [0, 1])
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    text = (tmp_path / "t.md").read_text()
    # the first round moved (113 -> 152 s, 35%): 2000 s is 13.16x the slower and 17.70x the faster alone;
    # the second (152 -> 150 s) did not, so it is not named
    assert "torch run 1: 113 and 152 s around it, 13.16-17.70x" in text, text
    assert "torch run 2" not in text and "during 1 run(s)" in text, text
