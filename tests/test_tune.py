"""clsf tune: the space file's checks, a pruned trial, two workers on one SQLite study, a killed
worker whose trial is queued again and resumed, and the study's report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clsf.errors import UserError

pytest.importorskip("optuna", reason="the tune extra is not installed: pip install -e '.[tune]'")
pytestmark = pytest.mark.extra

# tiny trials: the torch engine on synthetic images, seed-cnn a few channels wide
TRIAL = ["--engine", "torch", "--optimizer", "adam", "data.val_split=0.25", "model.args.widths=[4, 4]",
         "model.args.dense=8"]


def _space(tmp: Path, text: str) -> Path:
    path = tmp / "space.yaml"
    path.write_text(text)
    return path


def _tune(folder: Path, space: Path, *args: str, env: dict | None = None, wait: bool = True, **kw):
    cmd = [sys.executable, "-m", "clsf", "tune", "--space", str(space), "--out", str(folder), *TRIAL, *args]
    environ = {**os.environ, "CLSF_TUNE_HEARTBEAT_S": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=600)


def _study(folder: Path):
    import optuna

    return optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}").get_trials()


def _epochs(run: Path) -> list[int]:
    from clsf.run.rundir import RunDir

    return [int(r["epoch"]) for r in RunDir(run).metrics()]


@pytest.mark.parametrize("text, says", [
    ("trials: 3\n", "needs a 'space:' mapping"),
    ("space: {optim.lr: {low: 0.1, high: 0.01}}\n", "need low < high"),
    ("space: {optim.lr: {low: 0.0, high: 0.1, log: true}}\n", "low > 0 with log"),
    ("space: {optim.lr: {low: 1e-4, high: 0.1}}\n", "YAML reads 1e-4 as text"),
    ("space: {seed: [0, 1]}\n", "cannot be searched"),
    ("space: {batch_size: [16, 16]}\n", "distinct"),
    ("space: {batch_size: [16, 32]}\nobjective: test_acc\n", "not a per-epoch metric"),
    ("space: {batch_size: [16, 32]}\npruner: {name: hyperband}\n", "pruner must be one of"),
    ("space: {batch_size: [16, 32]}\nenqueue: [{optim.lr: 0.1}]\n", "enqueue must be a list of mappings over the space's keys"),
    ("space: {batch_size: [16, 32]}\nsamplr: tpe\n", "unknown top-level key(s) samplr"),
    ("space: {batch_size: [16, 32]}\nenqueue: [{batch_size: 64}]\n", "enqueued batch_size=64 is not one of [16, 32]"),
])
def test_space_file_mistakes_are_one_line(tmp_path, text, says):
    from clsf.experiments.tune import read_space

    with pytest.raises(UserError) as e:
        read_space(_space(tmp_path, text))
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("space, says", [
    ("space: {batch_size: [16, 0]}\n", "search space point {'batch_size': 0}"),  # a bad end of a list
    ("space: {optim.lr: {low: 1.0e-4, high: .inf}}\n", "finite"),
    ("space: {model.args.widths: [[4, 4], [4, 4, 4, 4, 4, 4, 4]]}\n", "search space point"),  # 7 pools of 32 pixels
    ("space: {optim.nam: [adam, sgd]}\n", "optim.nam"),  # not a config key
])
def test_every_point_is_checked_before_any_trial_trains(tmp_path, space, says):
    r = _tune(tmp_path / "t", _space(tmp_path, space), "--data", "synthetic:train=64,test=8", "--trials", "2")
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "t" / "runs").exists()  # nothing trained


@pytest.mark.torch
def test_a_bad_trial_is_pruned_and_the_study_continues_when_rerun(tmp_path):
    """The enqueued good trial completes; the bad one (lr 1e-4 with Adam: at chance after an epoch)
    is stopped by the median pruner after its first epoch, finished as such; running the same
    command with more trials continues the study, training only the new ones."""
    space = _space(tmp_path, "space:\n  optim.lr: {low: 1.0e-4, high: 0.01, log: true}\n"
                             "enqueue:\n  - {optim.lr: 0.003}\n  - {optim.lr: 0.0001}\n"
                             "pruner: {name: median, startup_trials: 1}\n")
    folder = tmp_path / "tune"
    common = ["--data", "synthetic:train=256,test=32", "--epochs", "3"]
    r = _tune(folder, space, *common, "--trials", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    trials = _study(folder)
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert "pruned after epoch 1: val_acc" in (folder / "logs" / "trial-0001.log").read_text()
    assert _epochs(folder / "runs" / "trial-0000") == [1, 2, 3] and _epochs(folder / "runs" / "trial-0001") == [1]
    final = json.loads((folder / "runs" / "trial-0001" / "final.json").read_text())
    assert final["stopped"] == "pruned"  # finished as pruned: a resume would not train it on
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["epochs_saved"] == 2 and summary["best"][0]["run"] == "trial-0000"
    assert "Pruned trials (1)" in (folder / "report.md").read_text()
    # the same command again with one more trial: the study continues, the two done trials are kept
    r = _tune(folder, space, *common, "--trials", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(_study(folder)) == 3 and r.stdout.count("[trial ") == 1  # one line per trial: only the new one ran
    assert _epochs(folder / "runs" / "trial-0000") == [1, 2, 3]  # not trained again
    # another search in the same folder is refused, naming what differs
    other = _space(tmp_path, "space:\n  optim.lr: {low: 1.0e-3, high: 0.01, log: true}\n")
    r = _tune(folder, other, *common, "--trials", "3")
    assert r.returncode == 2 and "another plan" in r.stderr


@pytest.mark.torch
@pytest.mark.slow  # the suite's time (20 s): the killed-worker test has two workers finish a study, the test
def test_two_workers_share_one_study_with_a_share_of_the_threads_each(tmp_path):  # after it --workers' threads
    """--workers 2: two processes on one SQLite study finish exactly N trials between them, each
    trial trained once (every epoch once in its run), some of them at the same time, and each
    trial's process given half of this machine's threads."""
    space = _space(tmp_path, "space:\n  optim.lr: {low: 1.0e-3, high: 0.01, log: true}\npruner: none\n")
    folder = tmp_path / "tune"
    r = _tune(folder, space, "--data", "synthetic:train=256,test=32", "--epochs", "2", "--trials", "4", "--workers", "2",
              env={"CLSF_OVERSUBSCRIBE": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    trials = _study(folder)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    runs = sorted(t.user_attrs["run"] for t in trials)
    assert runs == [f"trial-{i:04d}" for i in range(4)]
    for run in runs:
        assert _epochs(folder / "runs" / run) == [1, 2]
        env = json.loads((folder / "runs" / run / "env.json").read_text())
        assert env["threads"]["intra_op"] == max(1, (os.cpu_count() or 1) // 2)
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two trials overlapped: one worker did all"


@pytest.mark.torch
@pytest.mark.long  # about 30 s: out of the default suite's 12 minutes, in CI's second step
def test_a_killed_worker_s_trial_is_failed_queued_again_and_resumed(tmp_path):
    """Two workers (two commands on one folder). Worker A is killed -9 while its trial trains: the
    trial's process stops with a checkpoint (it gets SIGINT when its worker dies), the heartbeat stops,
    worker B marks the trial failed after the grace period and takes its queued copy, which resumes the
    same run directory. The study ends with its trials finished and nothing trained twice."""
    space = _space(tmp_path, "space:\n  optim.lr: {low: 1.0e-3, high: 0.01, log: true}\npruner: none\n")
    folder = tmp_path / "tune"
    # ~0.5 s an epoch here, the kill half a second after the first checkpoint: it lands mid-trial (with
    # 1,536 images and a second's wait the victim could finish all 5 epochs first, and the kill then fell
    # on its finish)
    args = ["--data", "synthetic:train=4096,test=32", "--epochs", "5", "--trials", "2", "--save-every-steps", "8"]
    env = {"OMP_NUM_THREADS": "1"}
    a = _tune(folder, space, *args, env=env, wait=False)
    deadline = time.time() + 120
    while not list(folder.glob("runs/*/checkpoints/last")) and time.time() < deadline:
        time.sleep(0.2)
    victim = next(folder.glob("runs/*/checkpoints/last")).parent.parent.name
    b = _tune(folder, space, *args, env=env, wait=False)
    time.sleep(0.5)
    a.kill()  # kill -9: no goodbye to the study
    a.wait()
    out_b, _ = b.communicate(timeout=600)
    assert b.returncode == 0, out_b
    trials = _study(folder)
    states = sorted(t.state.name for t in trials)
    assert states.count("COMPLETE") == 2 and states.count("FAIL") == 1, states
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert failed.user_attrs["run"] == victim
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == failed.number)
    assert retry.user_attrs["run"] == victim and retry.state.name == "COMPLETE"  # the same run directory, finished
    assert _epochs(folder / "runs" / victim) == [1, 2, 3, 4, 5]  # every epoch once
    env_json = json.loads((folder / "runs" / victim / "env.json").read_text())
    assert env_json.get("resumes"), "the queued copy did not resume the lost trial's checkpoint"
    assert "Traceback" not in (folder / "logs" / f"{victim}.log").read_text()


@pytest.mark.torch
def test_killing_the_command_stops_its_workers_and_their_trials(tmp_path):
    """`clsf tune --workers 2` trains two trials at once, each on half the threads and on settings of
    its own (the workers' samplers do not share a seed); kill -9 of the command stops the extra worker
    and every trial process within 10 s, each trial with a checkpoint; nothing keeps training. The
    command starts with SIGINT ignored, as under a test runner or a shell's background job, which its
    processes inherit: the signal that stops them is not lost."""
    space = _space(tmp_path, "space:\n  optim.lr: {low: 1.0e-3, high: 0.01, log: true}\npruner: none\n")
    folder = tmp_path / "tune"
    p = _tune(folder, space, "--data", "synthetic:train=2048,test=32", "--epochs", "500", "--trials", "4",
              "--workers", "2", env={"CLSF_OVERSUBSCRIBE": "1"}, wait=False,
              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    while len(list(folder.glob("runs/*/env.json"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    envs = list(folder.glob("runs/*/env.json"))
    assert len(envs) == 2  # two trials at once, each on its share of the threads
    for env in envs:
        assert json.loads(env.read_text())["threads"]["intra_op"] == max(1, (os.cpu_count() or 1) // 2)
    rates = {(env.parent / "config.yaml").read_text().split("\n  lr: ")[1].split("\n")[0] for env in envs}
    assert len(rates) == 2, f"both workers drew the same settings: optim.lr {rates}"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    while _clsf_processes(folder) and time.time() < deadline:
        time.sleep(0.5)
    left = {pid: _describe(pid) for pid in _clsf_processes(folder)}
    assert not left, f"processes kept running after the command was killed: {left}"


def _describe(pid: int) -> str:
    """A live process's command line, state, parent, threads, kernel wait channel and signal masks."""
    info = _proc_info(Path("/proc") / str(pid))
    if info is None:
        return "gone"
    cmd, status = info
    return (f"{cmd} | {status.get('State')} ppid {status.get('PPid')} threads {status.get('Threads')} "
            f"wchan {status.get('wchan')} SigIgn {status.get('SigIgn')} SigCgt {status.get('SigCgt')}")  # SIGINT: bit 1 (0x2)


def _proc_info(proc: Path) -> tuple[str, dict] | None:
    """(command line, /proc status fields + wchan) of a process, or None once it is gone."""
    try:
        cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        status = {k: v.strip() for k, _, v in (ln.partition(":") for ln in (proc / "status").read_text().splitlines())}
        status["wchan"] = (proc / "wchan").read_text()
    except OSError:
        return None
    return cmd, status


def _clsf_processes(folder: Path) -> list[int]:
    """Live processes whose command line names the folder (workers) or its runs (trials)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        info = _proc_info(proc)
        if info is not None and str(folder) in info[0] and "Z" not in info[1].get("State", "Z"):
            found.append(int(proc.name))
    return found


def test_without_optuna_tune_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    from clsf.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    space = _space(tmp_path, "space:\n  batch_size: [16, 32]\n")
    assert main(["tune", "--space", str(space), "--out", str(tmp_path / "t")]) == 2
    assert capsys.readouterr().err.strip() == "clsf: error: clsf tune needs Optuna: pip install -e '.[tune]'."
    assert not (tmp_path / "t").exists()


def test_the_pruners_judge_from_the_epoch_after_the_warm_up():
    """warmup_epochs: epochs every trial trains before it can be pruned (Optuna's steps here are epochs, from 1)."""
    from optuna.pruners import MedianPruner, NopPruner, SuccessiveHalvingPruner

    from clsf.integrations.pruning import make_pruner

    median = make_pruner({"name": "median", "startup_trials": 3, "warmup_epochs": 1})
    assert isinstance(median, MedianPruner) and median._n_warmup_steps == 2 and median._n_startup_trials == 3
    halving = make_pruner({"name": "halving", "warmup_epochs": 0})
    assert isinstance(halving, SuccessiveHalvingPruner) and halving._min_resource == 1
    assert isinstance(make_pruner({"name": "none"}), NopPruner)


def test_a_trial_file_keeps_the_storage_password_out(tmp_path, monkeypatch):
    """clsf tune names each trial's file on `clsf train --trial`: the file (and so the command line)
    holds the URL with *** for its password; the trial process takes the whole URL from
    CLSF_TUNE_STORAGE, and only when it is the same database's."""
    from clsf.integrations.pruning import STORAGE_ENV, read_trial, write_trial

    url = "postgresql://clsf:s3cret@db.example:5432/studies"
    path = tmp_path / "trial.json"
    write_trial(path, url, "st", 7, "val_acc", {"name": "median"})
    assert "s3cret" not in path.read_text()
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert read_trial(path)["storage"] == "postgresql://clsf:***@db.example:5432/studies"  # (the reporter warns, trains on)
    monkeypatch.setenv(STORAGE_ENV, "postgresql://clsf:other@elsewhere/studies")
    assert "***" in read_trial(path)["storage"]  # another database's password is not used
    monkeypatch.setenv(STORAGE_ENV, url)
    assert read_trial(path) == {"storage": url, "study": "st", "trial_id": 7, "objective": "val_acc", "pruner": {"name": "median"}}
    path.write_text(json.dumps({"storage": url, "study": "st"}))
    with pytest.raises(UserError, match="is not a clsf tune trial file"):
        read_trial(path)


@pytest.mark.torch
def test_a_spent_time_budget_starts_no_trial(tmp_path):
    """--minutes: no trial starts once the budget is spent (here at once); the command still reports."""
    space = _space(tmp_path, "space:\n  optim.lr: {low: 1.0e-3, high: 0.01, log: true}\n")
    r = _tune(tmp_path / "t", space, "--data", "synthetic:train=64,test=8", "--trials", "3", "--minutes", "0.0001")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "time budget (--minutes) is spent" in r.stdout and "trials: 0 complete" in r.stdout
    assert not (tmp_path / "t" / "runs").exists() and (tmp_path / "t" / "report.html").is_file()
    r = _tune(tmp_path / "u", space, "--data", "synthetic:train=64,test=8", "--minutes", "-1")
    assert r.returncode == 2 and "--minutes -1.0 a number of minutes > 0" in r.stderr
