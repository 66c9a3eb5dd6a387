"""Small frictions a newcomer met, each fixed and held here: a pipe closed by its reader, a config key
without its section, counted nouns, predict pointed at the wrong thing."""

import subprocess
import sys

import pytest

from clsf.cli import main
from clsf.config import build_config
from clsf.errors import UserError

CLOSED_STDOUT = "import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); from clsf.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("argv", [["engines"], ["models", "list"]])
def test_a_reader_that_leaves_early_ends_the_command_quietly_with_141(argv):
    # `clsf engines | head -1`: stdout's reader is gone before clsf writes; once, a BrokenPipeError traceback
    r = subprocess.run([sys.executable, "-c", CLOSED_STDOUT, *argv], capture_output=True, text=True)
    assert r.returncode == 141 and r.stderr == "", r.stderr


def test_a_shell_pipe_into_head_prints_one_line_and_no_traceback(tmp_path):
    r = subprocess.run(f"'{sys.executable}' -m clsf models list | head -1", shell=True, capture_output=True, text=True)
    assert len(r.stdout.splitlines()) == 1 and "Traceback" not in r.stderr and "Exception" not in r.stderr


@pytest.mark.parametrize("key,section", [("train_subset", "data"), ("lr", "optim"), ("hflip", "data"), ("mode", "tf")])
def test_a_key_given_without_its_section_is_pointed_at_it(key, section):
    with pytest.raises(UserError, match=f"did you mean '{section}.{key}'"):
        build_config(overrides=[f"{key}=1"])


def test_counted_nouns():
    from clsf.words import count

    assert [count(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert count(1, "class", "classes") == "1 class" and count(3, "class", "classes") == "3 classes"


def test_predict_pointed_at_an_export_file_or_elsewhere_says_what_to_pass(tmp_path, capsys):
    export = tmp_path / "exp"
    export.mkdir()
    (export / "clsf.json").write_text("{}")
    (export / "model.onnx").write_bytes(b"x")
    (tmp_path / "img.png").write_bytes(b"x")
    assert main(["predict", str(export / "model.onnx"), str(tmp_path / "img.png")]) == 2
    assert f"pass the folder: clsf predict {export} IMAGES" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(tmp_path / "img.png")]) == 2
    err = capsys.readouterr().err
    assert "not a clsf run directory" in err and "nor an export folder" in err and "clsf export" in err


@pytest.mark.parametrize("data,expected", [("../shared/data/cifar10-jpeg.tar.gz", "cifar10-jpeg"), ("/x/pets.zip", "pets"),
                                           ("mnist.npz", "mnist"), ("cifar10", "cifar10"), ("/data/imgs/", "imgs"),
                                           (".zip", ".zip")])
def test_run_folders_are_named_after_the_data_without_an_archive_suffix(tmp_path, data, expected):
    from clsf.run.files import data_slug
    from clsf.run.rundir import RunDir

    assert data_slug(data) == expected
    run = RunDir.create(str(tmp_path), "seed-cnn", "torch", data)
    assert run.name.endswith(f"-seed-cnn-torch-{expected}")


class _Terminal:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_the_epoch_bar_shows_rate_and_time_left_on_a_terminal_only(monkeypatch):
    import io

    from clsf.run import progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    term = _Terminal()
    bar = progress.Bar(True, 0, 3, out=term)
    now[0] += 10.0  # 50 of 200 steps in 10 s: 5 it/s, 150 left -> 30 s
    bar(49, 200, loss=1.5, acc=0.25)
    assert "epoch 1/3" in term.text and "50/200 loss 1.5000 acc 0.2500 5.0 it/s ETA 0:30" in term.text
    pipe = io.StringIO()  # a log or a pipe: nothing
    progress.Bar(True, 0, 3, out=pipe)(49, 200, loss=1.0)
    assert pipe.getvalue() == ""
    assert [progress.clock(s) for s in (5, 65, 3725)] == ["0:05", "1:05", "1:02:05"]


def test_a_compare_or_sweep_says_time_left_from_the_runs_it_trained(monkeypatch):
    from clsf.run import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    clock = progress.RunsClock(4)
    assert clock.line(4) == "elapsed 0:00"  # nothing trained yet: no guess
    clock.done(1.0, trained=False)  # a run finished earlier, skipped: costs nothing, says nothing
    now[0] = 60.0
    clock.done(59.0, trained=True)
    assert clock.line(2) == "elapsed 1:00, about 1:58 left"


@pytest.mark.torch
def test_short_runs_validate_and_test_on_subsets_and_the_header_says_so(tmp_path, capsys):
    from clsf.cli import main as clsf_main

    assert clsf_main(["train", "--engine", "torch", "--data", "synthetic:train=200,test=60,size=8x8x3,classes=4", "--epochs", "1",
                      "--runs-dir", str(tmp_path), "--run-name", "r", "data.val_subset=12", "data.test_subset=16",
                      "model.args.widths=[4, 4]", "model.args.dense=8"]) == 0
    out = capsys.readouterr().out
    assert "(160 train / 12 val / 16 test images)" in out
    import json

    assert json.loads((tmp_path / "r" / "final.json").read_text())["test_images"] == 16
    with pytest.raises(UserError, match="val_subset"):
        build_config(overrides=["data.val_subset=0"])


def test_help_counts_the_engines():
    from clsf.cli import build_parser
    from clsf.engines import ENGINES

    assert len(ENGINES) == 5 and "five training engines" in build_parser().format_help()


@pytest.mark.torch
def test_notes_for_a_taken_run_name_and_a_training_subset_beside_whole_splits(tmp_path, capsys):
    base = ["train", "--engine", "torch", "--data", "synthetic:train=120,test=40,size=8x8x3,classes=3", "--epochs", "1",
            "--runs-dir", str(tmp_path), "model.args.widths=[4, 4]", "model.args.dense=8"]
    assert main([*base, "--run-name", "mine"]) == 0
    capsys.readouterr()
    assert main([*base, "--run-name", "mine", "data.train_subset=20"]) == 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'mine'} exists, so this run is {tmp_path / 'mine-2'}" in err
    assert "data.train_subset=20 shrinks the training split only" in err and "data.val_subset and data.test_subset" in err


@pytest.mark.torch
def test_a_slow_start_is_not_called_chance_level(tmp_path, capsys):
    """The built-in sample, 1,000 images, lr 0.01 under cosine: a healthy run at chance after one short
    epoch is no evidence of a mistake (32 steps)."""
    assert main(["train", "--engine", "torch", "--epochs", "1", "--lr", "0.01", "optim.schedule=cosine",
                 "data.train_subset=1000", "--runs-dir", str(tmp_path), "--quiet"]) == 0
    assert "chance level" not in capsys.readouterr().err


@pytest.mark.torch
def test_export_force_replaces_only_an_export(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--engine", "torch", "--data", "synthetic:train=60,test=20,size=8x8x3,classes=3", "--epochs", "1",
                 "--runs-dir", str(tmp_path), "--run-name", "r", "--quiet", "model.args.widths=[4, 4]",
                 "model.args.dense=8"]) == 0
    out = tmp_path / "exp"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 0
    first = (out / "clsf.json").stat().st_mtime_ns
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out)]) == 2
    assert "--force replaces an earlier export" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "torchscript", "--out", str(out), "--force"]) == 0
    assert (out / "clsf.json").stat().st_mtime_ns != first and not (tmp_path / "exp.old").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", str(run), "--format", "torchscript", "--out", str(mine), "--force"]) == 2
    assert "--force replaces only an export clsf wrote" in capsys.readouterr().err and (mine / "notes.txt").exists()
