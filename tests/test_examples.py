"""Every script in examples/ runs, on tiny data, as a user would run it."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*args, cwd):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.tf
def test_mnist_tf_loop(tmp_path):
    r = _run(EXAMPLES / "mnist_tf_loop.py", "synthetic:train=300,test=60,size=28x28x1,classes=10", 2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("epoch 2: train_loss") and float(last.split("test_acc ")[1]) > 0.5  # the patterns are learnable


@pytest.mark.tf
@pytest.mark.torch
def test_compare_and_report(tmp_path):
    r = _run(EXAMPLES / "compare_and_report.py", "synthetic:train=120,test=40,size=10x10x3,classes=3", tmp_path / "cmp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cmp" / "report.html").is_file() and "open " in r.stdout


def test_every_example_is_short_and_tested():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    tested = {n.removeprefix("test_") + ".py" for n in globals() if n.startswith("test_") and n != "test_every_example_is_short_and_tested"}
    assert set(scripts) == tested
    assert all(len((EXAMPLES / s).read_text().splitlines()) <= 45 for s in scripts)
