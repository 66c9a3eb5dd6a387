"""A full disk stops a run in one line with the last checkpoint intact and nothing half-written, and
the run then resumes to the same result; --deterministic reruns are byte-identical."""

import csv
import errno
import json

import numpy as np
import pytest

from helpers import engine_params, long
from clsf.cli import main
from clsf.run import rundir

DATA = "synthetic:train=120,test=40,size=10x10x3,classes=3"
TINY = ["model.args.widths=[4, 4]", "model.args.dense=8"]
TIMING = ("seconds", "images_per_s", "peak_mem_mb")


def _train(tmp_path, name, *extra, engine="torch", epochs=3):
    return main(["train", "--engine", engine, "--data", DATA, "--epochs", str(epochs), "--runs-dir", str(tmp_path),
                 "--run-name", name, "--quiet", *TINY, "data.hflip=true", "model.args.dropout=0.3", *extra])


def _rows(run):
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def _no_partial_files(run):
    return [p for p in run.rglob("*") if p.name.endswith((".part", ".tmp", ".old"))]


@pytest.mark.torch
@pytest.mark.parametrize("where", ["checkpoint", "metrics"])
def test_a_full_disk_stops_cleanly_and_the_run_resumes_to_the_same_result(tmp_path, monkeypatch, capsys, where):
    assert _train(tmp_path, "whole") == 0
    from clsf.engines.torch_loop import TorchEngine

    calls = {"n": 0}
    fail_at = 3 if where == "checkpoint" else 2  # epoch 2's write (the first checkpoint written is checkpoints/init)

    def full(real):
        def write(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == fail_at:  # part of the write lands, then the disk is full
                real(*args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args, **kwargs)
        return write

    if where == "checkpoint":
        monkeypatch.setattr(TorchEngine, "save", full(TorchEngine.save))
    else:
        monkeypatch.setattr(rundir.RunDir, "write_metrics", full(rundir.RunDir.write_metrics))
    capsys.readouterr()
    assert _train(tmp_path, "full") == 5
    err = capsys.readouterr().err.strip()
    run = tmp_path / "full"
    assert err.count("\n") == 0 and f"no space left on the device holding {run}" in err
    kept = 1 if where == "checkpoint" else 2  # the metrics write fails after epoch 2's checkpoint landed
    assert f"checkpoints/last holds epoch {kept} intact" in err and "clsf train --resume" in err
    assert rundir.checkpoint_meta(run)["epoch"] == kept and not _no_partial_files(run) and not (run / "final.json").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert _rows(run) == _rows(tmp_path / "whole")  # each epoch once, the same numbers as never stopping
    assert json.loads((run / "final.json").read_text())["test_loss"] == json.loads((tmp_path / "whole" / "final.json").read_text())["test_loss"]


@pytest.mark.parametrize("engine", [pytest.param("keras", marks=[pytest.mark.tf, pytest.mark.long]), pytest.param("tf", marks=pytest.mark.tf),
                                    pytest.param("torch", marks=pytest.mark.torch)])
def test_deterministic_reruns_are_byte_identical(tmp_path, engine):
    for name, seed in (("a", "0"), ("b", "0"), ("other-seed", "1")):
        assert _train(tmp_path, name, "--deterministic", "--seed", seed, engine=engine, epochs=2) == 0
    a, b, c = (tmp_path / n for n in ("a", "b", "other-seed"))
    assert _rows(a) == _rows(b)
    with np.load(a / "predictions.npz") as za, np.load(b / "predictions.npz") as zb, np.load(c / "predictions.npz") as zc:
        assert za["logits"].tobytes() == zb["logits"].tobytes()
        assert za["logits"].tobytes() != zc["logits"].tobytes()  # the comparison can fail: another seed differs
    assert _rows(a) != _rows(c)
    # the frameworks' switch is the process's: a run without --deterministic after them turns it off
    assert _train(tmp_path, "after", engine=engine, epochs=1) == 0
    if engine == "torch":
        import torch

        assert not torch.are_deterministic_algorithms_enabled()
    else:
        from tensorflow.python.framework import config

        assert not config.is_op_determinism_enabled()


def test_resuming_inside_an_epoch_neither_skips_nor_repeats_a_sample():
    """Both pipelines, an epoch cut at several batches: the sample ids seen equal an uncut epoch's."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from clsf.data.tf_pipeline import make_dataset
    from clsf.data.torch_pipeline import Batches
    from clsf.data.transforms import Preprocess

    n, b = 70, 8
    x, ids = np.zeros((n, 4, 4, 3), np.uint8), np.arange(n, dtype=np.int64)  # labels = sample ids
    pre = Preprocess(hflip=True, crop_padding=1)
    for epoch in (0, 3):
        whole = np.concatenate([yb.numpy() for _, yb in Batches(x, ids, b, pre, True, seed=5, epoch=epoch)])
        assert sorted(whole) == list(range(n))
        for cut in (1, 4, 8):
            for parts in ([Batches(x, ids, b, pre, True, seed=5, epoch=epoch)],
                          [make_dataset(x, ids, b, pre, True, seed=5, epoch=epoch)]):
                head = np.concatenate([yb.numpy() for _, yb in parts[0]])[: cut * b]
                tail_src = (Batches(x, ids, b, pre, True, seed=5, epoch=epoch, first_step=cut) if isinstance(parts[0], Batches)
                            else make_dataset(x, ids, b, pre, True, seed=5, epoch=epoch, first_step=cut))
                tail = np.concatenate([yb.numpy() for _, yb in tail_src])
                assert np.array_equal(np.concatenate([head, tail]), whole)


ENGINES = engine_params()


@pytest.mark.parametrize("engine", long(ENGINES, "keras"))
def test_mid_epoch_checkpoints_resume_to_the_uninterrupted_result(tmp_path, engine):
    from clsf.config import build_config
    from clsf.run.train import train

    def cfg(name):
        return build_config(flags={"engine": engine, "epochs": 2, "batch_size": 16, "runs_dir": str(tmp_path), "run_name": name,
                                   "data": {"name": DATA}},
                            overrides=TINY + ["data.hflip=true", "data.crop_padding=1", "model.args.dropout=0.3",
                                              "optim.name=adam", "optim.schedule=cosine"])

    whole = train(cfg("whole"), quiet=True)
    cut = train(cfg("cut"), quiet=True, stop_after_steps=2)  # 6 steps an epoch: inside epoch 1
    assert rundir.checkpoint_meta(cut)["step"] == 2 and not (cut / "metrics.csv").exists()
    train(resume=cut, quiet=True, stop_after_steps=9)  # inside epoch 2
    meta = rundir.checkpoint_meta(cut)
    assert (meta["epoch"], meta["step"]) == (1, 3) and len(rundir.read_metrics(cut)) == 1
    train(resume=cut, quiet=True)
    a, b = rundir.read_metrics(whole), rundir.read_metrics(cut)
    assert [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-6, abs=1e-7), (k, ra, rb)
    with np.load(whole / "predictions.npz") as za, np.load(cut / "predictions.npz") as zb:
        assert np.abs(za["logits"] - zb["logits"]).max() <= 1e-6 * max(1.0, np.abs(za["logits"]).max())


@pytest.mark.torch
def test_ctrl_c_checkpoints_and_the_run_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    argv = [sys.executable, "-m", "clsf", "train", "--engine", "torch", "--data", "synthetic:train=3000,test=40,size=10x10x3,classes=3",
            "--epochs", "30", "--batch-size", "8", "--runs-dir", str(tmp_path), "--run-name", "r", *TINY]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in p.stdout:
        if line.startswith("epoch 2/30"):
            os.killpg(p.pid, signal.SIGINT)
            break
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    meta = rundir.checkpoint_meta(tmp_path / "r")
    assert meta["epoch"] >= 2 and "checkpoints/last holds the run up to epoch" in err
    assert err.count("interrupted") == 1, err  # said once, with how far it got
    r = subprocess.run([sys.executable, "-m", "clsf", "train", "--resume", str(tmp_path / "r"), "--epochs", str(meta["epoch"] + 1), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [m["epoch"] for m in rundir.read_metrics(tmp_path / "r")] == list(range(1, meta["epoch"] + 2))


@pytest.mark.torch
def test_ctrl_c_during_the_finish_is_held_until_the_run_is_complete(tmp_path, monkeypatch, capsys):
    """SIGINT while the finish writes (a Ctrl-C, or a tune worker dying under its trial) used to land
    anywhere in it, e.g. inside matplotlib's import, which made it an ImportError with a traceback and
    no final.json. Now the finish completes, then the interrupt stops the process, saying so; the
    teeth: the same SIGINT with the finish unguarded leaves no final.json."""
    import os
    import signal

    from clsf.run import train as train_module

    real = train_module.finish

    def interrupted(*args, **kwargs):  # the signal arrives at the finish's start
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "finish", interrupted)
    assert main(["train", "--engine", "torch", "--data", DATA, "--epochs", "1", "--runs-dir", str(tmp_path),
                 "--run-name", "r", "--quiet", *TINY]) == 130
    assert (tmp_path / "r" / "final.json").is_file()
    assert "interrupted as the run finished; it is complete" in capsys.readouterr().err
    monkeypatch.setattr(train_module, "_interrupt_held", lambda run: __import__("contextlib").nullcontext())
    found = []

    def unguarded(*args, **kwargs):  # the same SIGINT meeting Python's own Ctrl-C handler, nothing holding it
        # in the whole default suite (2026-12-06, twice) this run met a handler that did not raise and exited 0,
        # though the test alone passes: Python's handler is put in place here, and the one met is reported
        found.append(signal.getsignal(signal.SIGINT))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return interrupted(*args, **kwargs)

    monkeypatch.setattr(train_module, "finish", unguarded)
    code = main(["train", "--engine", "torch", "--data", DATA, "--epochs", "1", "--runs-dir", str(tmp_path),
                 "--run-name", "s", "--quiet", *TINY])
    assert code == 130, f"exit {code}; the SIGINT handler found at the finish: {found}"
    assert not (tmp_path / "s" / "final.json").exists()


def test_a_callback_start_that_fails_leaves_ctrl_c_as_it_was():
    """A callback whose start fails (a full disk as the logs open, a tracking server refusing) used to
    leave the callbacks started before it running: Interrupt's SIGINT handler stayed installed, so in
    that Python process (a notebook, a test run) Ctrl-C only flagged a dead run and no longer
    interrupted anything. The teeth: a fit whose second callback fails to start; the handler is
    Python's again after it, and the callback that did not start is not ended."""
    import signal

    from clsf.run import callbacks as cb
    from clsf.run.loop import Task, fit
    from clsf.run.state import RunState

    class Refuses(cb.Callback):
        ended = False

        def on_train_start(self, state):
            raise OSError(errno.ENOSPC, "No space left on device")

        def on_train_end(self, state):
            Refuses.ended = True

    before = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with pytest.raises(OSError):
            fit(Task(), RunState(), cb.Callbacks([cb.Interrupt(), Refuses()]))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert not Refuses.ended
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)


def test_ctrl_c_is_python_s_again_after_a_run_that_met_a_handler_set_outside_python(monkeypatch):
    """signal.signal answers None when the handler it replaces was set outside Python (by a library's C
    code); the Ctrl-C callback took None for "nothing installed" and left its own handler behind, so in
    that process a later Ctrl-C only flagged a finished run. Now Python's handler goes back. The teeth: the first answer is None, as it is then."""
    import signal

    from clsf.run import callbacks as cb
    from clsf.run.state import RunState

    real, answers = signal.signal, [None]

    def outside_first(signum, handler):  # the first replacement finds a handler Python did not install
        previous = real(signum, handler)
        return answers.pop() if answers else previous

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(signal, "signal", outside_first)
    try:
        c = cb.Interrupt()
        c.on_train_start(RunState())
        c.on_train_end(RunState())
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        real(signal.SIGINT, before if before is not None else signal.default_int_handler)


@pytest.mark.torch
def test_a_full_disk_at_the_first_checkpoint_leaves_no_run_behind(tmp_path, monkeypatch, capsys):
    """The disk fills while checkpoints/init is written (torch.save's own C++ writer used to fail with
    `basic_ios::clear` there): exit 5 in one line, and no run directory that nothing could resume."""
    from clsf.engines import torch_loop

    def full(obj, path):
        path.write_bytes(b"\0" * 10)  # part of the write lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch_loop, "save_torch", full)
    capsys.readouterr()
    assert _train(tmp_path, "first", epochs=1) == 5
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no epoch finished, so nothing is kept — free space and start it again" in err
    assert not (tmp_path / "first").exists()


@pytest.mark.torch
def test_resuming_a_run_on_a_read_only_place_is_one_line(tmp_path, monkeypatch, capsys):
    assert _train(tmp_path, "ro", epochs=1) == 0
    run = tmp_path / "ro"
    before = sorted((p, p.stat().st_mtime_ns) for p in run.rglob("*"))
    real = rundir.os.access
    monkeypatch.setattr(rundir.os, "access", lambda p, mode: False if mode == rundir.os.W_OK else real(p, mode))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write to {run}" in err and "copy the run somewhere writable" in err
    assert sorted((p, p.stat().st_mtime_ns) for p in run.rglob("*")) == before


@pytest.mark.torch
def test_a_full_disk_under_export_and_report_is_exit_5_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """TensorFlow says a full disk with its own error type (ResourceExhaustedError) and torch with
    OSError; either way: exit 5, one line, no export folder; a report leaves no report_files/."""
    assert _train(tmp_path, "run", epochs=1) == 0
    from clsf.engines.torch_loop import TorchEngine

    class ResourceExhaustedError(Exception):  # what tf.saved_model.save raises on a full disk, by its text
        pass

    def full(self, fmt, path, *args):
        raise ResourceExhaustedError(f"{path}/variables/variables.data-00000-of-00001.tempstate; No space left on device")

    monkeypatch.setattr(TorchEngine, "export", full)
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "x")]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is full; free space and export again" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()

    def no_space(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("clsf.report.page.write_text", no_space)
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device holding" in err
    assert not (tmp_path / "rep").exists()
