"""Every script in examples/ runs, on tiny data, as a user would run it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*args, cwd):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.tf
@pytest.mark.slow  # the suite's time (16 s); the tf engine's own loop is tested throughout the default suite
def test_mnist_tf_loop(tmp_path):
    r = _run(EXAMPLES / "mnist_tf_loop.py", "synthetic:train=300,test=60,size=28x28x1,classes=10", 2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("epoch 2: train_loss") and float(last.split("test_acc ")[1]) > 0.5  # the patterns are learnable
    # without its data (no MNIST where it looks): one line and the usage, not a traceback
    env = {k: v for k, v in os.environ.items() if k != "CLSF_DATA"} | {"CLSF_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(EXAMPLES / "mnist_tf_loop.py")], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "mnist not found" in r.stderr and "usage: python examples/mnist_tf_loop.py [DATA] [EPOCHS]" in r.stderr


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.slow  # the same path runs in the default suite: README walkthrough and test_experiments / test_gan
def test_compare_and_report(tmp_path):
    r = _run(EXAMPLES / "compare_and_report.py", "synthetic:train=120,test=40,size=10x10x3,classes=3", tmp_path / "cmp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cmp" / "report.html").is_file() and "open " in r.stdout


@pytest.mark.tf
@pytest.mark.torch
def test_add_loss_model(tmp_path):
    r = _run(EXAMPLES / "add_loss_model.py", "tf", "synthetic:train=120,test=20,size=28x28x1,classes=3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    penalised, plain = r.stdout.strip().splitlines()
    assert penalised.startswith("penalised") and plain.startswith("plain")


@pytest.mark.torch
@pytest.mark.slow  # the suite's time: trunk transfer itself is tested in test_trunk_transfer.py
def test_trunk_transfer(tmp_path):
    """With its defaults (the CIFAR-10 sample's classes in two halves) transfer shows: the fine-tuned
    and frozen runs beat chance (0.2) and the frozen one with no warning of chance level."""
    r = _run(EXAMPLES / "trunk_transfer.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: float(line.split()[-1]) for line in r.stdout.strip().splitlines()}
    assert list(rows) == ["scratch", "fine-tuned", "frozen"]
    assert rows["frozen"] > 0.3 and rows["fine-tuned"] > 0.3, rows
    assert "chance level" not in r.stderr


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_answers_help_and_writes_nothing(tmp_path, script):
    r = _run(EXAMPLES / script, "--help", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("usage:") and "Traceback" not in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("script", ["add_loss_model.py", "gan_mnist.py"])
def test_an_example_without_its_data_says_so_in_one_line(tmp_path, script):
    """No MNIST where it looks ($CLSF_DATA unset): the error and the usage, no traceback."""
    env = {k: v for k, v in os.environ.items() if k != "CLSF_DATA"} | {"CLSF_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("clsf: error: ") and "mnist" in lines[0] and lines[-1].startswith("usage:"), r.stderr


@pytest.mark.torch
@pytest.mark.slow  # the same path runs in the default suite: README walkthrough and test_experiments / test_gan
def test_gan_mnist(tmp_path):
    r = _run(EXAMPLES / "gan_mnist.py", "synthetic:train=128,test=64,size=28x28x1,classes=4", 1, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "samples in" in r.stdout and (tmp_path / "runs" / "example-gan" / "gan" / "samples" / "progress.png").is_file()


def test_every_example_is_short_and_tested():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    tested = {n.removeprefix("test_") + ".py" for n in globals() if n.startswith("test_") and not n.startswith("test_every_")
              and not n.startswith("test_an_")}
    assert set(scripts) == tested
    assert all(len((EXAMPLES / s).read_text().splitlines()) <= 45 for s in scripts)

