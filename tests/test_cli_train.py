"""train / evaluate / predict from the command line, and their bad-input answers."""

import json
import subprocess
import sys

import numpy as np
import pytest

from clsf.cli import main
from helpers import png_bytes

DATA = "synthetic:train=80,test=20,size=10x10x3,classes=2"


def _clsf(*args):
    return subprocess.run([sys.executable, "-m", "clsf", *args], capture_output=True, text=True)


@pytest.mark.torch
def test_train_evaluate_predict(tmp_path, capsys):
    assert main(["train", "--engine", "torch", "--data", DATA, "--epochs", "2", "--runs-dir", str(tmp_path),
                 "--run-name", "r", "--quiet", "model.args.widths=[4, 4]", "optim.schedule=cosine"]) == 0
    run = tmp_path / "r"
    final = json.loads((run / "final.json").read_text())
    assert main(["evaluate", str(run)]) == 0
    assert f"test_acc {final['test_acc']:.4f}" in capsys.readouterr().out
    img = tmp_path / "x.png"
    img.write_bytes(png_bytes(np.full((20, 20, 3), 128, np.uint8)))  # another size: resized to 10x10
    assert main(["predict", str(run), str(img), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    probs = [float(t.split()[-1]) for t in line.split(": ", 1)[1].split(", ")]
    assert line.startswith(str(img)) and len(probs) == 2 and sum(probs) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.torch
def test_resume_from_cli_extends_epochs(tmp_path):
    assert main(["train", "--engine", "torch", "--data", DATA, "--epochs", "1", "--runs-dir", str(tmp_path),
                 "--run-name", "r", "--quiet", "model.args.widths=[4, 4]"]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--quiet", "--outcome", str(tmp_path / "o.json")]) == 0
    assert len((tmp_path / "r" / "metrics.csv").read_text().strip().splitlines()) == 3
    assert json.loads((tmp_path / "o.json").read_text()) == {"exit_code": 0, "error": None}


def test_outcome_file_holds_the_error_line(tmp_path):
    """--outcome: how the command ended, for the process that started it (compare, sweep, tune)."""
    out = tmp_path / "o.json"
    r = _clsf("train", "optim.lrr=0.1", "--runs-dir", str(tmp_path / "runs"), "--outcome", str(out))
    assert r.returncode == 2 and json.loads(out.read_text()) == {
        "exit_code": 2, "error": r.stderr.strip().removeprefix("clsf: error: ")}


@pytest.mark.parametrize("args,message", [
    (["train", "optim.lrr=0.1"], "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    (["train", "epochs=many"], "config key 'epochs' expects int"),
    (["train", "optim.schedule=sawtooth"], "optim.schedule 'sawtooth' is not known"),
    (["train", "--data", "nowhere/at/all"], "does not exist"),
    (["train", "--model", "gan-generator", "--data", "synthetic"], "not a classifier"),
    (["train", "--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    (["train", "--resume", "."], "not a clsf run directory"),
    (["evaluate", "."], "not a clsf run directory"),
    (["train", "model.args.colour=red"], "has no option colour"),
    (["train", "--trial", "missing.json"], "--trial missing.json could not be read as a trial file"),
])
def test_bad_train_input_is_one_line_exit_2(args, message, tmp_path):
    r = _clsf(*args, "--runs-dir", str(tmp_path)) if args[0] == "train" else _clsf(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_every_command_has_help():
    for cmd in (["train"], ["evaluate"], ["predict"], ["models", "summary"], ["models", "list"]):
        r = _clsf(*cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout, cmd
