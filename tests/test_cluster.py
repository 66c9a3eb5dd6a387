"""--executor ray on a real Ray cluster the test starts on this machine: a head and a second node
(`ray start --head`, `ray start --address`), each with one CPU. compare's runs land on both nodes
and end as the local executor's do (the same numbers, the same verdict); a node killed mid-run
takes its run's process with it, and the command run again finishes every run with each epoch
trained once; a killed driver leaves its runs resumable; tune's workers run as tasks and fill the
study exactly. Without Ray (the `ray` extra) these skip, naming it; the one-line refusals need no
cluster. The cluster's tests are `long` (about 2.5 minutes): CI's second step runs them."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from clsf.cli import main

DATA = "synthetic:train=240,test=60,size=12x12x3,classes=3"
LONGER = "synthetic:train=3200,test=60,size=12x12x3,classes=3"  # epochs long enough to be cut into
TINY = ["model.args.widths=[4, 8]", "model.args.dense=16"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(*args, env) -> int:
    """`ray start ...` in a session of its own, which every daemon it leaves behind inherits: the
    session's id, by which they are found again (Ray's own `ray stop` would stop every Ray on the
    machine)."""
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    p = subprocess.Popen([ray, "start", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    out, _ = p.communicate(timeout=180)
    assert p.returncode == 0, out[-2000:]
    return p.pid


def _kill_session(sid: int) -> None:
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                os.kill(int(d.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


class Cluster:
    """A head and a second node on this machine, one CPU each."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="clsfray", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
        self.head = _ray_start("--head", "--port", str(self.port), "--num-cpus", "1", "--include-dashboard", "false",
                               "--temp-dir", self.tmp, "--disable-usage-stats", env=self.env)
        self.add_node()

    def add_node(self):
        self.node = _ray_start("--address", self.address, "--num-cpus", "1", env=self.env)

    def kill_node(self):
        """The second node dies as a machine would: its raylet and every process it started, at once
        (a run's `clsf train` gets SIGINT as its parent dies, and stops with a checkpoint)."""
        _kill_session(self.node)

    def stop(self):
        _kill_session(self.node)
        _kill_session(self.head)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray", reason="needs Ray: pip install -e '.[ray]'")
    c = Cluster()
    yield c
    c.stop()


def _clsf(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clsf", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _compare(out, cluster=None, seeds="0,1", epochs="2", data=DATA):
    where = ["--executor", "ray", "--ray-address", cluster.address] if cluster else []
    return ["compare", "--engines", "torch", "--seeds", seeds, "--data", data, "--epochs", epochs, "--out", str(out),
            "--quiet", *where, *TINY]


def _driver_past_epoch_two(args: list[str], runs: list[Path]) -> subprocess.Popen:
    """The command started, returned once every run in `runs` has finished two epochs."""
    # SIGINT at its default, as a command in a terminal has it: a suite started as a background job
    # (nohup ... &) hands its children SIGINT ignored, and Python then installs no Ctrl-C for them
    driver = subprocess.Popen([sys.executable, "-m", "clsf", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not all((r / "metrics.csv").is_file() and len(_epochs(r)) >= 2 for r in runs):
        if time.monotonic() > deadline or driver.poll() is not None:
            driver.kill()
            pytest.fail(f"the runs did not start: {driver.communicate()[0][-2000:]}")
        time.sleep(0.5)
    return driver


def _epochs(run: Path) -> list[int]:
    with open(run / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _results(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    runs = {r.name: json.loads((r / "final.json").read_text()) for r in (folder / "runs").iterdir()}
    return {"verdict": summary["verdict"], "runs": {n: (f["test_acc"], f["test_loss"]) for n, f in runs.items()}}


@pytest.mark.extra
@pytest.mark.long
@pytest.mark.torch
def test_runs_land_on_both_nodes_and_end_as_the_local_executor_s(cluster, tmp_path):
    r = _clsf(*_compare(tmp_path / "ray", cluster))
    assert r.returncode == 0, r.stderr[-2000:]
    nodes = {line.split(" on node ")[1].split()[0] for line in r.stdout.splitlines() if " on node " in line}
    assert len(nodes) == 2, r.stdout  # one CPU a node, two runs at once: one on each
    local = _clsf(*_compare(tmp_path / "local"), env=ONE_THREAD)  # the tasks' thread count, here
    assert local.returncode == 0, local.stderr[-2000:]
    assert _results(tmp_path / "ray") == _results(tmp_path / "local")
    again = _clsf(*_compare(tmp_path / "ray", cluster))
    assert again.returncode == 0 and again.stdout.count("finished earlier, skipped") == 2


@pytest.mark.extra
@pytest.mark.long
@pytest.mark.torch
def test_a_node_killed_mid_run_and_the_command_run_again_finish_every_run_once(cluster, tmp_path):
    out = tmp_path / "cmp"
    args = _compare(out, cluster, "0,1", "20", LONGER)
    # both runs under way: one of them is on the second node
    driver = _driver_past_epoch_two(args, [out / "runs" / n for n in ("torch-s0", "torch-s1")])
    cluster.kill_node()
    said, _ = driver.communicate(timeout=600)
    cluster.add_node()  # back for the tests after this one
    r = _clsf(*args)  # whatever the first command left undone (Ray may have retried the lost run itself)
    assert r.returncode == 0, said + r.stdout + r.stderr[-2000:]
    for n in ("torch-s0", "torch-s1"):
        assert _epochs(out / "runs" / n) == list(range(1, 21)), (n, said)  # each epoch once, none lost
        assert (out / "runs" / n / "final.json").is_file()
    assert any("clsf train --resume" in (out / "logs" / f"{n}.log").read_text() for n in ("torch-s0", "torch-s1")), said
    local = _clsf(*_compare(tmp_path / "local", None, "0,1", "20", LONGER), env=ONE_THREAD)
    assert local.returncode == 0 and _results(out) == _results(tmp_path / "local")  # resumed exactly


@pytest.mark.extra
@pytest.mark.long
@pytest.mark.torch
def test_a_killed_driver_leaves_its_runs_resumable(cluster, tmp_path):
    out = tmp_path / "cmp"
    args, run = _compare(out, cluster, "0", "20", LONGER), out / "runs" / "torch-s0"
    driver = _driver_past_epoch_two(args, [run])
    driver.kill()
    driver.communicate()
    r = _clsf(*args)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "clsf train --resume" in (out / "logs" / "torch-s0.log").read_text()
    assert _epochs(run) == list(range(1, 21))


@pytest.mark.extra
@pytest.mark.long
@pytest.mark.torch
def test_tune_workers_run_as_tasks_and_fill_the_study_exactly(cluster, tmp_path):
    pytest.importorskip("optuna", reason="needs Optuna: pip install -e '.[tune]'")
    space = tmp_path / "space.yaml"
    space.write_text("space:\n  optim.lr: {low: 1.0e-3, high: 0.01, log: true}\npruner: none\n")
    r = _clsf("tune", "--engine", "torch", "--data", DATA, "--epochs", "1", "--space", str(space), "--trials", "4",
              "--workers", "3", "--out", str(tmp_path / "t"), "--quiet", "--executor", "ray", "--ray-address",
              cluster.address, "data.val_split=0.25", *TINY)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    # three workers, more than this machine's cores (each a task on the cluster: allowed), two at a time
    assert len({line.split("]")[0] for line in r.stdout.splitlines() if line.startswith("[worker")}) >= 2, r.stdout
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["counts"]["COMPLETE"] == 4, summary["counts"]


def test_the_ray_flags_go_with_executor_ray_and_ray_itself_is_one_line(tmp_path, capsys, monkeypatch):
    base = ["compare", "--engines", "torch", "--seeds", "0", "--data", DATA, "--out", str(tmp_path / "c")]
    assert main([*base, "--ray-address", "127.0.0.1:1"]) == 2
    assert "--ray-address goes with --executor ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert main([*base, "--executor", "ray", "--ray-address", "127.0.0.1:1"]) == 2
    assert "--executor ray needs Ray: pip install -e '.[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.extra
def test_no_cluster_at_the_address_is_one_line_and_leaves_nothing(tmp_path):
    pytest.importorskip("ray", reason="needs Ray: pip install -e '.[ray]'")
    r = _clsf("compare", "--engines", "torch", "--seeds", "0", "--data", DATA, "--out", str(tmp_path / "c"),
              "--executor", "ray", "--ray-address", f"127.0.0.1:{_free_port()}", timeout=120)
    assert r.returncode == 2 and "no Ray cluster at 127.0.0.1:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.extra
@pytest.mark.long
@pytest.mark.torch
def test_a_sweep_on_the_cluster_ends_as_the_local_one(cluster, tmp_path):
    def sweep(out, *where, env=None):
        r = _clsf("sweep", "--engine", "torch", "--grid", "optim.lr=0.001,0.003", "--data", DATA, "--epochs", "2",
                  "--out", str(out), "--quiet", *where, *TINY, env=env)
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        return r.stdout

    said = sweep(tmp_path / "ray", "--executor", "ray", "--ray-address", cluster.address)
    assert said.count(" on node ") == 2
    sweep(tmp_path / "local", env=ONE_THREAD)

    def points(folder):  # every number but the seconds
        return [{k: v for k, v in p.items() if k != "train_s"} for p in json.loads((folder / "summary.json").read_text())["points"]]

    assert points(tmp_path / "ray") == points(tmp_path / "local")


@pytest.mark.extra
@pytest.mark.long
@pytest.mark.torch
def test_ctrl_c_stops_the_runs_with_a_checkpoint_and_the_command_again_finishes_them(cluster, tmp_path):
    out = tmp_path / "cmp"
    args, runs = _compare(out, cluster, "0,1", "20", LONGER), [out / "runs" / n for n in ("torch-s0", "torch-s1")]
    driver = _driver_past_epoch_two(args, runs)
    driver.send_signal(signal.SIGINT)
    said, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, said
    assert "run the same command again to finish the rest" in said and "Traceback" not in said, said
    r = _clsf(*args)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    for run in runs:
        assert _epochs(run) == list(range(1, 21))
    assert any("clsf train --resume" in (out / "logs" / f"{r.name}.log").read_text() for r in runs)
