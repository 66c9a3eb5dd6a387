"""kill -9 at any commit point: every file is whole-old or whole-new, and resuming always completes
to the numbers of a run never killed.

Every file clsf writes becomes visible through one `os.replace` (a temporary name renamed into
place; checkpoint folders swapped by two renames). The child process below SIGKILLs itself just
before its Nth `os.replace`, so varying N kills training inside a checkpoint write, between a
checkpoint and its log line, between the two renames of a swap, and inside the final report.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from clsf.run import rundir

DATA = "synthetic:train=120,test=40,size=10x10x3,classes=3"
ARGS = ["--data", DATA, "--epochs", "3", "--batch-size", "16", "--quiet", "--save-every-steps", "2",
        "model.args.widths=[4, 4]", "model.args.dense=8", "model.args.dropout=0.3", "data.hflip=true", "optim.name=adam"]
KILLER = textwrap.dedent("""
    import atexit, os, signal, sys
    kill_at, seen, real = int(os.environ["KILL_AT_REPLACE"]), [0], os.replace
    atexit.register(lambda: print(f"replaces {seen[0]}", file=sys.stderr))  # how many commit points a run has
    def replace(src, dst):
        seen[0] += 1
        if seen[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: a power cut at this point
        return real(src, dst)
    os.replace = replace
    from clsf.cli import main
    sys.exit(main(sys.argv[1:]))
""")
TIMING = ("seconds", "images_per_s", "peak_mem_mb")


def _clsf(args, kill_at=0):
    env = {**os.environ, "KILL_AT_REPLACE": str(kill_at), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", KILLER, *args], capture_output=True, text=True, env=env)


def _whole(run):
    """Every file clsf wrote reads back whole (temporary .part/.tmp/.old leftovers aside)."""
    for p in run.rglob("*"):
        if any(part.endswith((".part", ".tmp", ".old")) for part in p.parts):
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix in (".yaml", ".yml"):
            yaml.safe_load(p.read_text())
        elif p.suffix == ".npz":
            with np.load(p) as z:
                [z[k] for k in z.files]
        elif p.name == "metrics.csv":
            epochs = [int(r["epoch"]) for r in csv.DictReader(p.open())]
            assert epochs == list(range(1, len(epochs) + 1)), epochs
    for folder in (run / "checkpoints").glob("[!.]*"):
        assert (folder / "meta.json").is_file() and (folder / "weights.npz").is_file(), folder


def _rows(run):
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if k not in TIMING and v} for r in csv.DictReader(f)]


@pytest.mark.parametrize("engine,kills", [
    # the default suite kills the torch engine three times; the RunDir and the loop are every engine's (-m slow: all)
    pytest.param("torch", [3, 9, 12], marks=pytest.mark.torch),
    pytest.param("keras", [8, 10, 15, 7], marks=[pytest.mark.tf, pytest.mark.slow]),
    pytest.param("tf", [11, 13, 9], marks=[pytest.mark.tf, pytest.mark.slow]),
])
def test_kill_9_anywhere_then_resume_completes_to_the_same_numbers(tmp_path, engine, kills):
    ref = _clsf(["train", "--engine", engine, "--runs-dir", str(tmp_path), "--run-name", "ref", *ARGS])
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    for kill_at in kills:
        if (run / "checkpoints" / "last").exists() or (run / "checkpoints" / ".last.tmp").exists() or (run / "checkpoints" / ".last.old").exists():
            r = _clsf(["train", "--resume", str(run)], kill_at)
        else:  # killed before its first checkpoint: nothing to keep, start again
            shutil.rmtree(run, ignore_errors=True)
            r = _clsf(["train", "--engine", engine, "--runs-dir", str(tmp_path), "--run-name", "run", *ARGS], kill_at)
        assert r.returncode in (-9, 0), r.stderr
        if run.exists():
            _whole(run)
        if r.returncode == 0:
            break
    r = _clsf(["train", "--resume", str(run)])
    assert r.returncode == 0, r.stderr
    assert "is finished" in r.stdout or (run / "final.json").exists()
    _whole(run)
    a, b = _rows(tmp_path / "ref"), _rows(run)
    assert [x["epoch"] for x in b] == [1, 2, 3]
    for x, y in zip(a, b):
        assert y == pytest.approx(x, rel=1e-6, abs=1e-7)
    fa, fb = (json.loads((d / "final.json").read_text()) for d in (tmp_path / "ref", run))
    assert fb["test_loss"] == pytest.approx(fa["test_loss"], rel=1e-6) and fb["test_acc"] == fa["test_acc"]
    assert not [p for p in run.rglob("*") if p.name.endswith((".part", ".tmp", ".old"))]  # leftovers cleaned


def test_a_cut_swap_is_finished_on_the_next_read(tmp_path):
    """The unit under the kill test: after `last` moved aside and before the new one moved in."""
    ckpts = tmp_path / "checkpoints"
    (ckpts / ".last.old").mkdir(parents=True)
    (ckpts / ".last.old" / "meta.json").write_text('{"epoch": 1}')
    (ckpts / ".last.tmp").mkdir()
    (ckpts / ".last.tmp" / "meta.json").write_text('{"epoch": 2}')
    assert rundir.checkpoint_meta(tmp_path)["epoch"] == 2  # the new one was complete (meta.json is written last)
    shutil.rmtree(ckpts)
    (ckpts / ".last.old").mkdir(parents=True)
    (ckpts / ".last.old" / "meta.json").write_text('{"epoch": 1}')
    (ckpts / ".last.tmp").mkdir()  # the new one never got its meta.json: the old one stands
    assert rundir.checkpoint_meta(tmp_path)["epoch"] == 1


def test_a_tensorboard_record_cut_by_a_kill_is_dropped_not_fatal(tmp_path):
    from clsf.run.tensorboard import ScalarWriter
    from helpers import read_scalars

    w = ScalarWriter(tmp_path)
    for step in (1, 2, 3):
        w.scalars(step, {"loss": float(step)})
    w.close()
    data = w.path.read_bytes()
    w.path.write_bytes(data[:-7])  # the last record's append cut short
    assert [(s, v) for s, _, v in read_scalars(tmp_path)] == [(1, 1.0), (2, 2.0)]


@pytest.mark.torch
@pytest.mark.parametrize("writes", [pytest.param((0, 4), marks=pytest.mark.long), pytest.param((1, 2, 3), marks=pytest.mark.slow)])
def test_a_kill_at_every_write_of_the_finish_is_completed_by_resume_without_training(tmp_path, writes):
    """The finish is a step of its own: the checkpoint already says training is done, final.json is
    written last, and a resume writes what is missing and trains nothing. The default suite kills
    before the finish's first write and before final.json; -m slow before the three between."""
    args = ["--engine", "torch", "--data", DATA, "--epochs", "2", "--quiet", "model.args.widths=[4, 4]", "model.args.dense=8"]
    ref = _clsf(["train", "--runs-dir", str(tmp_path), "--run-name", "ref", *args])
    assert ref.returncode == 0, ref.stderr
    total = int(ref.stderr.split("replaces ")[-1].split()[0])
    finish = ("predictions.npz", "history.png", "confusion.png", "summary.txt", "final.json")  # torch: no tracing in env.json
    for k in (total - len(finish) + 1 + i for i in writes):  # a kill just before those writes of the finish
        name = f"k{k}"
        r = _clsf(["train", "--runs-dir", str(tmp_path), "--run-name", name, *args], k)
        run = tmp_path / name
        assert r.returncode == -9 and not (run / "final.json").exists(), (k, r.stderr)
        meta, rows = rundir.checkpoint_meta(run), _rows(run)
        r = _clsf(["train", "--resume", str(run)])
        assert r.returncode == 0, r.stderr
        assert rundir.checkpoint_meta(run) == meta and _rows(run) == rows  # nothing trained again
        assert all((run / f).is_file() for f in finish), k
        fa, fb = (json.loads((d / "final.json").read_text()) for d in (tmp_path / "ref", run))
        assert fb["test_acc"] == fa["test_acc"] and fb["test_loss"] == pytest.approx(fa["test_loss"], rel=1e-6)
        assert "is finished" in _clsf(["train", "--resume", str(run)]).stdout
