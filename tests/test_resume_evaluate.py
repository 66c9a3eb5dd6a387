"""Resume is explicit; TensorBoard never shows an epoch twice; exit codes; evaluate crosses frameworks."""

import json

import pytest
import yaml

from clsf.cli import main
from clsf.run import rundir
from clsf.run.tensorboard import ScalarWriter
from helpers import read_scalars
from clsf.run.evaluate import evaluate
from clsf.run.train import train
from helpers import tiny_config

DATA = "synthetic:train=150,test=60,size=12x12x3,classes=3"
SMALL = ["model.args.widths=[8, 8]", "model.args.dense=16"]


def _run(engine, tmp_path, *overrides, epochs=2, stop_after=None, small=SMALL):
    return train(tiny_config(engine, tmp_path, DATA, *overrides, epochs=epochs, small=small), quiet=True, stop_after=stop_after)


@pytest.mark.torch
@pytest.mark.parametrize("argv,flag", [
    (["--batch-size", "64"], "--batch-size"), (["--model", "resnet-s"], "--model"), (["--engine", "keras"], "--engine"),
    (["--optimizer", "adam"], "--optimizer"), (["--data", "cifar10-sample"], "--data"),
    (["optim.schedule=cosine"], "optim.schedule"), (["--lr", "0.5"], "--lr")])
def test_resume_refuses_what_cannot_change(tmp_path, capsys, argv, flag):
    run = _run("torch", tmp_path, stop_after=1)
    before = (run / "config.yaml").read_text(), (run / "metrics.csv").read_text()
    assert main(["train", "--resume", str(run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and flag in err and "cannot change when resuming" in err
    assert ((run / "config.yaml").read_text(), (run / "metrics.csv").read_text()) == before  # nothing touched


@pytest.mark.torch
def test_resume_applies_and_records_what_can_change(tmp_path, capsys):
    run = _run("torch", tmp_path, "optim.schedule=cosine", stop_after=1)
    assert main(["train", "--resume", str(run), "--epochs", "3", "--device", "cpu", "--batch-size", "32", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "optim.schedule=cosine spans the run's total epochs" in err and "from 2 to 3" in err  # said, not silent
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 3
    assert [r["epoch"] for r in rundir.read_metrics(run)] == [1, 2, 3]
    resumes = json.loads((run / "env.json").read_text())["resumes"]
    assert resumes[-1]["after_epoch"] == 1 and resumes[-1]["changed"] == {"epochs": [2, 3], "device": ["auto", "cpu"]}


@pytest.mark.torch
@pytest.mark.parametrize("schedule,warned", [("cosine", True), ("onecycle", True), ("step", False), ("constant", False)])
def test_more_epochs_from_inside_the_first_warns_where_the_curve_moves(tmp_path, capsys, schedule, warned):
    """Resumed from a checkpoint inside epoch 1 (no whole epoch to count its steps by): one warning
    line where the new epoch count moves the rates to come, none where it does not."""
    run = train(tiny_config("torch", tmp_path, DATA, f"optim.schedule={schedule}", epochs=2, small=SMALL), quiet=True,
                stop_after_steps=1)
    assert rundir.checkpoint_meta(run)["epoch"] == 0
    assert main(["train", "--resume", str(run), "--epochs", "3", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert ("spans the run's total epochs, so extending it from 2 to 3" in err) is warned, err
    assert "Traceback" not in err and [r["epoch"] for r in rundir.read_metrics(run)] == [1, 2, 3]
    assert main(["train", "--resume", str(run), "--epochs", "4", "--quiet"]) == 0  # a finished run, extended
    assert ("so extending it from 3 to 4" in capsys.readouterr().err) is warned


@pytest.mark.parametrize("done,says", [(1, "from the unfreeze at epoch 3 (optim.unfreeze_lr=0.01) falls"),
                                        (3, "goes from 0.00122 (last step trained) to 0.0055 at epoch 4")])
def test_the_warning_names_the_unfreezes_second_phase_where_only_it_moves(capsys, done, says):
    """With optim.unfreeze_lr the run is two schedules (lr_at); more epochs move only the second, so the
    warning says which epochs the curve spans, where it starts and its floor (at most unfreeze_lr / 10)."""
    from clsf import build_config
    from clsf.run.resume import _warn_reshaped_schedule

    cfg = build_config(flags={"epochs": 4}, overrides=["freeze=trunk", "init_from=unused", "unfreeze_after=2",
                                                       "optim.unfreeze_lr=0.01", "optim.lr=0.1", "optim.schedule=cosine",
                                                       "optim.min_lr=0.005"])
    _warn_reshaped_schedule(cfg, 3, {"global_step": 10 * done, "step": 0, "epoch": done})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optim.schedule=cosine spans the epochs after unfreeze_after=2, so extending it " \
        "from 3 to 4" in err and says in err and "to 0.001 by epoch 4" in err, err


@pytest.mark.torch
def test_resume_of_a_finished_run_says_so_and_changes_nothing(tmp_path, capsys):
    run = _run("torch", tmp_path, epochs=1)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert main(["train", "--resume", str(run)]) == 0
    assert "is finished (1 epoch," in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    assert main(["train", "--resume", str(run), "--epochs", "0"]) == 2  # validated like any value


@pytest.mark.torch
def test_an_early_stopped_run_without_its_finish_finishes_and_trains_nothing(tmp_path, capsys):
    """Killed after early stopping decided but before final.json: the resume writes the finish only."""
    run = _run("torch", tmp_path, epochs=4, stop_after=2)
    meta_path = rundir.RunDir(run).checkpoint("last").meta
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "stopped_early": True}))  # what early stopping at epoch 2 leaves
    train(resume=run, quiet=True)
    assert [r["epoch"] for r in rundir.read_metrics(run)] == [1, 2] and rundir.checkpoint_meta(run)["epoch"] == 2
    assert json.loads((run / "final.json").read_text())["epochs"] == 2
    train(resume=run, quiet=False, changes={"epochs": 3})  # asked for more: it trains on
    assert [r["epoch"] for r in rundir.read_metrics(run)] == [1, 2, 3]


@pytest.mark.torch
def test_tensorboard_has_each_epoch_once_across_an_interrupted_resume(tmp_path):
    run = _run("torch", tmp_path, epochs=3, stop_after=1)
    w = ScalarWriter(run / "tb")  # as if epoch 2 reached TensorBoard and then the process died
    w.scalars(2, {"train_loss": 99.0, "val_acc": 0.0})
    w.close()
    train(resume=run, quiet=True)
    scalars = read_scalars(run / "tb")
    keys = [(step, tag) for step, tag, _ in scalars]
    assert len(keys) == len(set(keys)) and sorted({s for s, _ in keys}) == [1, 2, 3]
    assert 99.0 not in [v for _, _, v in scalars]


@pytest.mark.tf
def test_tensorboard_purge_marker_is_what_tensorflow_reads(tmp_path):
    import tensorflow as tf

    w = ScalarWriter(tmp_path, purge_step=4)
    w.close()
    events = list(tf.compat.v1.train.summary_iterator(str(w.path)))
    assert events[1].step == 4 and events[1].session_log.status == tf.compat.v1.SessionLog.START


@pytest.mark.torch
def test_non_finite_loss_has_its_own_exit_code(tmp_path, capsys):
    code = main(["train", "--engine", "torch", "--data", DATA, "--epochs", "2", "--runs-dir", str(tmp_path),
                 "--optimizer", "sgd", "--lr", "1e12", "--quiet", *SMALL])
    assert code == 3 and "the training loss became" in capsys.readouterr().err


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.parametrize("trained,other", [("keras", "torch"), ("torch", "keras"), ("tf", "torch")])
def test_evaluate_in_the_other_framework_gives_the_same_predictions(tmp_path, trained, other):
    run = _run(trained, tmp_path, "model.name=resnet-s", "model.args.widths=[8, 8, 8]", "model.args.blocks=1", small=[])
    final = json.loads((run / "final.json").read_text())
    got = evaluate(run, engine=other)
    assert got["engine"] == other and got["trained_with"] == trained
    assert abs(got["test_acc"] - final["test_acc"]) <= 0.001
    assert got["agreement"]["same_prediction"] >= 0.999 and got["agreement"]["max_abs_logit_diff"] < 1e-3


@pytest.mark.tf
@pytest.mark.torch
def test_evaluate_across_frameworks_has_teeth(tmp_path, monkeypatch):
    """Without the NHWC/NCHW reordering of the first dense layer, torch sees other weights."""
    run = _run("keras", tmp_path)
    monkeypatch.setattr("clsf.models.transfer.flatten_perms", lambda spec: {})
    got = evaluate(run, engine="torch")
    assert got["agreement"]["max_abs_logit_diff"] > 1e-3


@pytest.mark.torch
def test_evaluate_val_split_and_other_data(tmp_path, capsys):
    run = _run("torch", tmp_path)
    val = evaluate(run, split="val")
    assert val["split"] == "val" and val["test_images"] == 30  # 20% of 150, stratified
    assert abs(val["test_acc"] - rundir.read_metrics(run)[-1]["val_acc"]) < 1e-12
    other = evaluate(run, data="synthetic:train=30,test=20,size=12x12x3,classes=3,seed=5")
    assert other["test_images"] == 20 and "agreement" not in other
    assert main(["evaluate", str(run), "--data", "synthetic:train=30,test=20,size=12x12x3,classes=4"]) == 2
    assert "has classes" in capsys.readouterr().err


@pytest.mark.torch
def test_resume_after_a_kill_between_checkpoint_and_log_keeps_every_epoch(tmp_path):
    run = _run("torch", tmp_path, epochs=3, stop_after=2)
    rows = rundir.read_metrics(run)
    rundir.RunDir(run).write_metrics(rows[:1])  # the checkpoint of epoch 2 landed, its log line did not
    train(resume=run, quiet=True)
    again = rundir.read_metrics(run)
    assert [r["epoch"] for r in again] == [1, 2, 3] and again[1]["val_loss"] == rows[1]["val_loss"]
    steps = [step for step, tag, _ in read_scalars(run / "tb") if tag == "val_loss"]
    assert steps == [1, 2, 3]
