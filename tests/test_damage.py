"""A damaged run directory: every file of a run x five kinds of damage x the commands that read
runs. Each either works (the file was not needed) or says one line naming the problem (exit 2);
never a traceback, and a refusing command changes no file of the run."""

import json
import shutil

import numpy as np
import pytest

from clsf.cli import main
from helpers import png_bytes, tiny_config

DATA = "synthetic:train=60,test=20,size=8x8x3,classes=3"
FILES = ["config.yaml", "model.yaml", "env.json", "checkpoints/last/meta.json", "checkpoints/last/state.pt",
         "checkpoints/last/weights.npz", "metrics.csv", "final.json", "predictions.npz"]
NEEDED = {"config.yaml", "env.json", "checkpoints/last/meta.json", "checkpoints/last/weights.npz"}  # by every command
DAMAGE = {
    "missing": lambda p: p.unlink(),
    "half": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()),
    "schema": lambda p: p.write_text("[1, 2, 3]\n" if p.suffix in (".json", ".yaml") else "epoch,x\nnot,a number\n"
                                     if p.suffix == ".csv" else "PK not a zip"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("torch")
    from clsf.run.train import train

    root = tmp_path_factory.mktemp("runs")
    train(tiny_config("torch", root, DATA, run_name="finished"), quiet=True)
    train(tiny_config("torch", root, DATA, run_name="unfinished"), quiet=True, stop_after=1)
    (root / "img.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    return root


def _snapshot(root):
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


COMMANDS = {
    "evaluate": lambda run, root: ["evaluate", str(run)],
    "predict": lambda run, root: ["predict", str(run), str(root / "img.png")],
    "report": lambda run, root: ["report", str(run), "--out", str(root / "report")],
    "resume": lambda run, root: ["train", "--resume", str(run), "--quiet"],
}


@pytest.mark.torch
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("name", FILES)
def test_a_damaged_file_gives_one_line_and_changes_nothing(runs, tmp_path, capsys, name, damage, command):
    source = runs / ("unfinished" if command == "resume" else "finished")
    run = tmp_path / "run"
    shutil.copytree(source, run)
    if not (run / name).exists():
        pytest.skip(f"{source.name} has no {name}")
    DAMAGE[damage](run / name)
    before = _snapshot(run)
    capsys.readouterr()
    code = main(COMMANDS[command](run, runs))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and code in (0, 2), (code, err)
    if code == 2:
        assert err.strip().count("\n") == 0 and err.startswith("clsf: error: "), err
        assert _snapshot(run) == before  # refused before anything was written
    if name in NEEDED and command != "report":
        assert code == 2 and (name.split("/")[-1] in err or "checkpoints/last" in err), err
    if command == "resume" and name in ("model.yaml", "checkpoints/last/state.pt") and damage != "missing":
        assert code == 2, err
    if command == "resume" and name == "checkpoints/last/state.pt" and damage == "missing":
        assert code == 2 and "--weights-only" in err


@pytest.mark.torch
def test_a_lost_optimizer_state_resumes_only_when_asked_and_on_record(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs / "unfinished", run)
    (run / "checkpoints" / "last" / "state.pt").unlink()
    assert main(["train", "--resume", str(run), "--quiet", "--weights-only"]) == 0
    env = json.loads((run / "env.json").read_text())
    assert env["resumes"][-1]["changed"] == {"weights_only": True} and (run / "final.json").exists()


@pytest.mark.torch
def test_a_changed_config_or_model_file_is_refused_on_resume(runs, tmp_path, capsys):
    for name, edit in (("config.yaml", lambda t: t.replace("name: rmsprop", "name: sgd")),
                       ("model.yaml", lambda t: t.replace("units: 8", "units: 9"))):
        run = tmp_path / name
        shutil.copytree(runs / "unfinished", run)
        text = (run / name).read_text()
        assert edit(text) != text
        (run / name).write_text(edit(text))
        before = _snapshot(run)
        assert main(["train", "--resume", str(run), "--quiet"]) == 2
        assert f"{name} changed since checkpoints/last was written" in capsys.readouterr().err
        assert _snapshot(run) == before


@pytest.mark.torch
@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("name", sorted(NEEDED | {"model.yaml", "checkpoints/last/state.pt"}))
def test_export_refuses_a_damaged_run_and_writes_nothing(runs, tmp_path, capsys, name, damage):
    """Export reads a run through the same validation as evaluate: each file it needs, each damage.
    It needs the weights, not the optimizer state: without a good state.pt it still exports."""
    run = tmp_path / "run"
    shutil.copytree(runs / "finished", run)
    DAMAGE[damage](run / name)
    before = _snapshot(tmp_path)
    code = main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "exported")])
    err = capsys.readouterr().err
    if code == 0:  # only a file export does not read may be missing or damaged
        assert name == "checkpoints/last/state.pt" or (name == "model.yaml" and damage == "missing"), err
        assert (tmp_path / "exported" / "model.pt").exists()
        return
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err and name.split("/")[-1] in err
    assert _snapshot(tmp_path) == before
