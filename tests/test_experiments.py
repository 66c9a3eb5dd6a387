"""compare and sweep: every run in its own process, the same initial weights across engines (and a
test that fails when they are not), continuing a stopped folder, refusing a different plan."""

import fcntl
import json
import subprocess
import sys

import pytest

from clsf.cli import main
from clsf.report.runs import RunRecord
from clsf.report.summary import compare_summary
from clsf.run import files, rundir

DATA = "synthetic:train=120,test=40,size=10x10x3,classes=3"
TINY = ["model.args.widths=[4, 4]", "model.args.dense=8"]


def _compare(out, *extra, engines="keras,torch", seeds="0"):
    return main(["compare", "--engines", engines, "--seeds", seeds, "--data", DATA, "--epochs", "2",
                 "--out", str(out), *TINY, *extra])


@pytest.mark.tf
@pytest.mark.torch
def test_compare_shares_initial_weights_and_reports_both_engines(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert _compare(out) == 0
    said = capsys.readouterr().out
    assert "engines agree" in said or "cannot decide" in said  # one seed: never "differ"
    summary = json.loads((out / "summary.json").read_text())
    # keras' initial weights went to torch: the same function before any training
    assert summary["step0_max_abs_logit_diff"]["torch"] < 1e-5
    assert [e["finished"] for e in summary["engines"].values()] == [1, 1]
    for name in ("keras-s0", "torch-s0"):
        assert (out / "runs" / name / "final.json").is_file() and (out / "logs" / f"{name}.log").is_file()
    html = (out / "report.html").read_text()
    assert "keras-s0" in html and "torch-s0" in html and summary["verdict"] in html


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.long  # the suite's time (three compares, 33 s); the killed compare below stays in the default suite
def test_a_stopped_compare_folder_continues_and_a_finished_one_runs_nothing(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert _compare(out) == 0
    capsys.readouterr()
    # a stopped compare: torch never started, keras died after its last checkpoint, before final.json
    keras_rows = (out / "runs" / "keras-s0" / "metrics.csv").read_text()
    (out / "runs" / "keras-s0" / "final.json").unlink()
    torch_run = out / "runs" / "torch-s0"
    subprocess.run(["rm", "-r", str(torch_run)], check=True)
    assert _compare(out) == 0
    said = capsys.readouterr().out
    assert "keras-s0: resuming after epoch 2" in said and "[2/2] torch-s0: finished, test_acc" in said
    assert "[torch-s0] epoch" not in said  # off a terminal: one line per run, its epoch lines in logs/
    assert "epoch 1/2" in (out / "logs" / "torch-s0.log").read_text()
    assert (out / "runs" / "keras-s0" / "metrics.csv").read_text() == keras_rows  # nothing retrained
    assert json.loads((out / "summary.json").read_text())["step0_max_abs_logit_diff"]["torch"] < 1e-5

    assert _compare(out) == 0  # all finished: nothing runs
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.slow  # the suite's time (16 s); the shared-init compare above stays in the default suite
def test_independent_init_shows_in_the_step0_difference(tmp_path):
    """The teeth of the test above: without the transfer, the engines start from different functions."""
    assert _compare(tmp_path / "cmp", "--independent-init") == 0
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["independent_init"] and summary["step0_max_abs_logit_diff"]["torch"] > 1e-2


def _wait_for_epoch(run, epoch: int, seconds: float = 180) -> None:
    """Until the run's metrics.csv has `epoch` rows (a compare's children write to their logs, not to the
    compare's output, off a terminal)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        csv = run / "metrics.csv"
        if csv.is_file() and len(csv.read_text().strip().splitlines()) > epoch:
            return
        time.sleep(0.2)
    raise AssertionError(f"{run} never reached epoch {epoch}")


@pytest.mark.torch
@pytest.mark.slow  # the suite's time (18 s); the killed compare below (its children stop with a checkpoint) stays
def test_ctrl_c_stops_a_compare_that_the_same_command_then_finishes(tmp_path):
    """A real interrupt: SIGINT to the terminal's process group (parent and child) mid-epoch."""
    import os
    import signal

    argv = [sys.executable, "-m", "clsf", "compare", "--engines", "torch", "--seeds", "0,1", "--data", DATA,
            "--epochs", "40", "--out", str(tmp_path / "cmp"), *TINY]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_epoch(tmp_path / "cmp" / "runs" / "torch-s0", 3)
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert "compare stopped with 0 of 2 runs finished; run the same command again" in err
    run = tmp_path / "cmp" / "runs" / "torch-s0"
    done = rundir.checkpoint_meta(run)["epoch"]
    assert 2 <= done < 40 and not (run / "final.json").exists()
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0 and f"torch-s0: resuming after epoch {done}" in r.stdout and "torch-s1: finished" in r.stdout
    assert [m["epoch"] for m in rundir.read_metrics(run)] == list(range(1, 41))


@pytest.mark.torch
def test_a_killed_compare_takes_its_child_along_and_the_rerun_finishes(tmp_path):
    """kill -9 of the compare process: its training child stops too (it would otherwise race the
    rerun into a duplicate run directory), and the same command then finishes every run."""
    import os
    import signal
    import time

    argv = [sys.executable, "-m", "clsf", "compare", "--engines", "torch", "--seeds", "0", "--data", DATA,
            "--epochs", "40", "--out", str(tmp_path / "cmp"), *TINY]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_epoch(tmp_path / "cmp" / "runs" / "torch-s0", 2)
    children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert children
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{c}") and "zombie" not in _status(c) for c in children):
        time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{c}") and "zombie" not in _status(c) for c in children)
    log = (tmp_path / "cmp" / "logs" / "torch-s0.log").read_text()  # told to stop, not killed by a broken pipe
    assert "stopping after this step" in log and "Traceback" not in log, log
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert sorted(x.name for x in (tmp_path / "cmp" / "runs").iterdir()) == ["torch-s0"]  # no duplicate run
    assert [m["epoch"] for m in rundir.read_metrics(tmp_path / "cmp" / "runs" / "torch-s0")] == list(range(1, 41))


def _status(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/status").read().lower()
    except OSError:
        return "zombie"


def test_a_run_is_trained_by_one_process_at_a_time(tmp_path, capsys):
    from clsf.errors import UserError
    from clsf.run.rundir import RunDir

    run = RunDir(tmp_path)
    with run.lock():
        assert run.is_locked()
        with pytest.raises(UserError, match="another clsf process is training"):
            with run.lock():
                pass
    assert not run.is_locked()


def test_compare_refuses_another_plan_and_a_busy_folder(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "plan.json").write_text(json.dumps({"kind": "compare", "model": "seed-cnn", "epochs": 1}))
    assert _compare(out) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds a compare with another plan" in err
    assert sorted(p.name for p in out.iterdir()) == [".lock", "plan.json"]  # nothing started

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert _compare(tmp_path / "other") == 2
    assert "is not a clsf compare, sweep or tune folder" in capsys.readouterr().err

    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / ".lock", "w") as f:  # another compare holds the folder
        fcntl.flock(f, fcntl.LOCK_EX)
        r = subprocess.run([sys.executable, "-m", "clsf", "compare", "--engines", "torch", "--data", DATA,
                            "--epochs", "1", "--out", str(busy), *TINY], capture_output=True, text=True)
    assert r.returncode == 2 and "another clsf command is working in" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,message", [
    (["compare", "--engines", "keras,jax"], "names jax"),
    (["compare", "--engines", "torch,torch"], "names an engine twice"),
    (["compare", "--seeds", "0,x"], "not a comma list of integers"),
    (["compare", "init_from=somewhere"], "init_from cannot be given to compare"),
    (["sweep", "--grid", "batch_size"], "is not KEY=V1,V2"),
    (["sweep", "--grid", "optim.lrr=0.1,0.2"], "unknown config key 'optim.lrr'"),
    (["sweep", "--grid", "engine=keras,torch"], "use clsf compare"),
    (["sweep", "--grid", "batch_size=16,0"], "grid point {'batch_size': 0}: batch_size=0 must be at least 1"),
    (["sweep"], "a sweep needs --grid"),
    (["sweep", "--grid", "model.name=seed-cnn,no-such-model"], "grid point {'model.name': 'no-such-model'}: unknown model"),
    (["sweep", "--grid", "model.args.dense=8,100000000"], "grid point {'model.args.dense': 100000000}: model 'seed-cnn' would need"),
    (["report", "no/such/run"], "does not exist"),
])
def test_bad_experiment_input_is_one_line_exit_2(args, message, tmp_path):
    extra = ["--runs-dir", str(tmp_path / "runs")] if args[0] != "report" else []
    r = subprocess.run([sys.executable, "-m", "clsf", *args, *extra], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "runs").exists()  # validated before anything is written


@pytest.mark.torch
def test_sweep_runs_the_grid_sorts_by_accuracy_and_skips_finished_points(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", "--engine", "torch", "--data", DATA, "--epochs", "1", "--out", str(out),
            "--grid", "batch_size=16,32", "optim.name=sgd,adam", "optim.lr=0.01", *TINY]
    assert main(argv) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["swept"] == ["batch_size", "optim.name"] and plan["base"]["optim"]["lr"] == 0.01  # one value: fixed
    names = [r["name"] for r in plan["runs"]]
    assert names[0] == "bs16-sgd-s0" and len(names) == 4
    for name, point in ((r["name"], r["point"]) for r in plan["runs"]):
        cfg = (out / "runs" / name / "config.yaml").read_text()
        assert f"batch_size: {point['batch_size']}" in cfg and f"name: {point['optim.name']}" in cfg
    points = json.loads((out / "summary.json").read_text())["points"]
    accs = [p["test_acc"][0] for p in points]
    assert accs == sorted(accs, reverse=True) and len(points) == 4
    assert (out / "report_files" / "sweep.png").is_file()
    capsys.readouterr()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4


@pytest.mark.torch
def test_a_failed_run_does_not_stop_the_others_and_exits_4(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "--engine", "torch", "--data", DATA, "--epochs", "1", "--out", str(out), "--optimizer", "sgd",
                 "--grid", "optim.lr=0.01,1e30", *TINY]) == 4
    err = capsys.readouterr().err
    assert "[lr1e+30-s0] failed: the training loss became" in err and "1 sweep run(s) failed" in err
    assert (out / "runs" / "lr0.01-s0" / "final.json").is_file()
    assert "1/1" in (out / "report.md").read_text()  # the finished point is reported


@pytest.mark.torch
def test_init_from_a_different_model_is_refused(tmp_path, capsys):
    common = ["train", "--engine", "torch", "--data", DATA, "--epochs", "1", "--runs-dir", str(tmp_path), "--quiet"]
    assert main([*common, "--run-name", "a", *TINY]) == 0
    assert main([*common, "--run-name", "b", "model.args.widths=[6, 6]", f"init_from={tmp_path / 'a'}"]) == 2
    assert "do not fit model 'seed-cnn'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def _record(tmp_path, engine, seed, acc):
    return RunRecord(tmp_path / f"{engine}-s{seed}", {"engine": engine, "seed": seed, "epochs": 1, "model": {"name": "m"}},
                     {}, [{"epoch": 1, "seconds": 1.0, "images_per_s": 10.0, "val_acc": acc, "peak_mem_mb": 1.0}],
                     {"test_acc": acc, "test_loss": 1.0})


@pytest.mark.parametrize("accs,verdict", [
    ({"keras": [0.680, 0.690, 0.670], "torch": [0.676, 0.686, 0.666]}, "engines agree: spread of mean test accuracy 0.40 points"),
    ({"keras": [0.680, 0.690, 0.670], "torch": [0.600, 0.610, 0.590]}, "engines differ: spread of mean test accuracy 8.00 points"),
    ({"keras": [0.60, 0.70, 0.50], "torch": [0.58, 0.68, 0.48]}, "engines agree: spread of mean test accuracy 2.00 points, seed-to-seed std 10.00"),
    ({"keras": [0.68], "torch": [0.60]}, "cannot decide: spread of test accuracy 8.00 points with one seed per engine"),
    ({"keras": [0.680], "torch": [0.675]}, "engines agree: spread of mean test accuracy 0.50 points, one seed"),
])
def test_compare_verdict(tmp_path, accs, verdict):
    seeds = list(range(len(accs["keras"])))
    plan = {"engines": list(accs), "seeds": seeds, "runs": [{"name": f"{e}-s{s}", "engine": e, "seed": s} for s in seeds for e in accs]}
    records = {f"{e}-s{s}": _record(tmp_path, e, s, a[s]) for e, a in accs.items() for s in seeds}
    assert compare_summary(plan, records)["verdict"].startswith(verdict)
    del records["torch-s0"]
    assert compare_summary(plan, records)["verdict"].startswith(f"incomplete: {2 * len(seeds) - 1} of {2 * len(seeds)}")


def test_plan_ids_follow_the_plan():
    from clsf.config import Config
    from clsf.experiments.compare import plan_compare
    from clsf.experiments.runner import plan_id

    a = plan_compare(Config(), ["keras", "torch"], [0, 1], False)
    assert plan_id(a) == plan_id(plan_compare(Config(), ["keras", "torch"], [0, 1], False))
    assert plan_id(a) != plan_id(plan_compare(Config(epochs=6), ["keras", "torch"], [0, 1], False))
    assert plan_id(a) != plan_id(plan_compare(Config(), ["torch", "keras"], [0, 1], False))
    assert files.slug("../shared/data/cifar10-jpeg.tar.gz") == "cifar10-jpeg.tar.gz"


def test_sweep_runs_have_short_readable_names_that_never_clash(monkeypatch):
    from clsf.config import build_config
    from clsf.experiments import sweep

    cfg = build_config(overrides=[f"data.name={DATA}"])
    grid = {"batch_size": [16, 32], "optim.name": ["sgd", "adam"], "optim.lr": [0.01], "model.args.dropout": [0.0, 0.5]}
    plan, jobs = sweep.plan_sweep(cfg, grid, [0, 1])
    names = [r["name"] for r in plan["runs"]]
    assert names[:3] == ["bs16-sgd-drop0.0-s0", "bs16-sgd-drop0.0-s1", "bs16-sgd-drop0.5-s0"]
    assert [n for n, _ in jobs] == names and len(set(names)) == 16
    assert all(c.run_name == n and c.optim.lr == 0.01 for n, c in jobs)  # the full keys live in each run's config
    # two points that would shorten alike are numbered instead
    monkeypatch.setattr(sweep, "_name", lambda point, seed, index: f"same-s{seed}")
    plan, jobs = sweep.plan_sweep(cfg, grid, [0, 1])
    assert [r["name"] for r in plan["runs"]][:3] == ["point000-s0", "point000-s1", "point001-s0"]
    assert len({n for n, _ in jobs}) == 16 and all(c.run_name == n for n, c in jobs)
