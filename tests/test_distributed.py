"""Several processes on one machine (over 127.0.0.1): torch DDP through torchrun's launcher, and
the tf engine under MultiWorkerMirroredStrategy (TF_CONFIG); and two nodes, each its own process
group and its own loopback address (127.0.0.1, 127.0.0.2) as two machines would be.

The equivalence: 2 processes x batch B train to the same weights as 1 process x batch 2B on the
same data order, including an epoch whose last global batch holds one image (one process's share
is empty). Its teeth: two plausible mistakes, made on purpose, must fail it. The failure test kills
one process mid-run: the command must stop within a bounded time with one line and exit code 6,
and the run must resume afterwards (with another process count).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clsf.distributed import part

pytestmark = pytest.mark.torch
WORKER = Path(__file__).with_name("ddp_worker.py")
# 2 x 16 images per step; 65 training images end each epoch on one image (process 1's share is
# empty), 67 on three (shares of 2 and 1: the mean must weight images, not processes);
# SGD at a gentle rate and no dropout, so the runs agree to float32 rounding (measured 2e-8; at lr 0.05
# one ReLU that float rounding flips in epoch 2 already moves a weight by 3e-4)
# data.cutout: a per-image batch technique, so each process must erase the squares of its own share
COMMON = ["--data", "synthetic", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.01", "--quiet", "data.cutout=8"]


def test_part_tiles_the_batch_in_rank_order():
    for n in range(0, 40):
        for size in (1, 2, 3, 4):
            shares = [part(10, 10 + n, r, size) for r in range(size)]
            assert shares[0][0] == 10 and shares[-1][1] == 10 + n
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
            lengths = [b - a for a, b in shares]
            assert max(lengths) - min(lengths) <= 1 and (n == 0 or lengths[0] >= 1)


def _train(tmp_path: Path, name: str, nproc: int, batch: int, images: int, sabotage: str = "none", engine: str = "torch") -> dict:
    args = ["--engine", engine, *COMMON, "--batch-size", str(batch), "--runs-dir", str(tmp_path), "--run-name", name,
            "model.args.dropout=0", f"data.train_subset={images}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if engine == "tf" and nproc > 1:  # the cluster as clsf's launcher writes it: N workers on 127.0.0.1
        from clsf.distributed.launch import _free_ports

        workers = [f"127.0.0.1:{p}" for p in _free_ports(nproc)]
        procs = [subprocess.Popen([sys.executable, str(WORKER), sabotage, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**env, "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                                                                  "task": {"type": "worker", "index": i}})})
                 for i in range(nproc)]
        errs = [p.communicate(timeout=300)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errs[0][-3000:]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] if nproc > 1 else [sys.executable]
        r = subprocess.run([*launcher, str(WORKER), sabotage, *args], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    with np.load(tmp_path / name / "checkpoints" / "last" / "weights.npz") as z:
        return {k: z[k] for k in z.files}


def _max_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


ONE = {}


def one_process(tmp_path_factory, images: int, engine: str = "torch") -> dict:
    if (images, engine) not in ONE:
        ONE[images, engine] = _train(tmp_path_factory.mktemp("one"), "one", 1, 32, images, engine=engine)
    return ONE[images, engine]


@pytest.mark.parametrize("images", [65, pytest.param(67, marks=pytest.mark.slow)])  # uneven shares, one or three left over
def test_two_processes_train_as_one_with_the_doubled_batch(tmp_path_factory, tmp_path, images):
    two = _train(tmp_path, "two", 2, 16, images)
    assert _max_diff(one_process(tmp_path_factory, images), two) <= 1e-5
    env = json.loads((tmp_path / "two" / "env.json").read_text())
    assert env["replicas"] == {"count": 2, "processes": 2, "batch_size_per_replica": 16, "effective_batch_size": 32}
    metrics = (tmp_path / "two" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3  # one writer: a header and two epochs, not two copies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # no second run directory


@pytest.mark.slow  # the teeth of the test above (about 25 s); run with -m slow
@pytest.mark.parametrize("sabotage", ["same-share", "mean-per-process"])
def test_the_equivalence_catches_a_broken_share_rule(tmp_path_factory, tmp_path, sabotage):
    broken = _train(tmp_path, "broken", 2, 16, 67, sabotage)
    assert _max_diff(one_process(tmp_path_factory, 67), broken) > 1e-4


@pytest.mark.tf
@pytest.mark.slow  # the suite's time (21 s): torch's two-process equivalence stays in the default suite
@pytest.mark.parametrize("sabotage", ["none", "same-share"])
def test_two_tf_workers_train_as_one_with_the_doubled_batch(tmp_path_factory, tmp_path, sabotage):
    two = _train(tmp_path, "two", 2, 16, 67, sabotage, engine="tf")
    diff = _max_diff(one_process(tmp_path_factory, 67, "tf"), two)
    assert diff <= 1e-5 if sabotage == "none" else diff > 1e-4
    if sabotage == "none":  # the chief alone wrote the run
        assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]
        assert json.loads((tmp_path / "two" / "env.json").read_text())["replicas"]["count"] == 2


def test_the_keras_engine_refuses_several_processes_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "clsf", "train", "--engine", "keras", "--nproc", "2", "--runs-dir", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--engine tf" in r.stderr and "Traceback" not in r.stderr and not any(tmp_path.iterdir())


def _rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the launcher's worker processes, read from their environment (torchrun's RANK,
    or the task index in TF_CONFIG)."""
    out = {}
    for pid in subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                out[int(item[5:])] = int(pid)
            if item.startswith(b"TF_CONFIG="):
                out[json.loads(item[10:])["task"]["index"]] = int(pid)
    return out


def _resumed_in_one_process(run) -> list[dict]:
    """The stopped run resumed in one process (at an epoch's end any process count may resume) for
    one more epoch: it must finish; its env.json's resumes."""
    done = json.loads((run / "checkpoints" / "last" / "meta.json").read_text())["epoch"]
    r = subprocess.run([sys.executable, "-m", "clsf", "train", "--resume", str(run), "--epochs", str(done + 1), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / "final.json").read_text())["epochs"] == done + 1
    return json.loads((run / "env.json").read_text())["resumes"]


@pytest.mark.parametrize("engine", [pytest.param("torch", marks=pytest.mark.long), pytest.param("tf", marks=[pytest.mark.tf, pytest.mark.slow])])
def test_a_killed_process_stops_the_run_in_bounded_time_and_it_resumes(tmp_path, engine):
    run = tmp_path / "k"
    cmd = [sys.executable, "-m", "clsf", "train", "--engine", engine, "--nproc", "2", "--data", "synthetic:train=3000",
           "--epochs", "8", "--batch-size", "16", "--runs-dir", str(tmp_path), "--run-name", "k", "--quiet", "dist_timeout_s=20"]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last").is_dir():  # an epoch is done: kill process 1 in the next
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[1][-2000:]
        time.sleep(0.2)
    os.kill(_rank_pids(launcher)[1], signal.SIGKILL)
    killed = time.monotonic()
    _, err = launcher.communicate(timeout=120)
    assert time.monotonic() - killed < 60
    assert launcher.returncode == 6, err[-2000:]
    assert "process 1 of 2 was killed by SIGKILL" in err and "clsf train --resume" in err, err[-3000:]
    assert not (run / "final.json").exists()
    assert _resumed_in_one_process(run)[-1]["changed"]["replicas"] == [2, 1]


@pytest.mark.parametrize("survivor", [6, -signal.SIGTERM])
def test_the_launcher_names_the_killed_process_not_a_survivor_stopped_in_the_same_second(monkeypatch, survivor):
    # CI once blamed process 0: it had printed its lost-peer line and was still exiting when the agent
    # sent it SIGTERM, and torch stamps failures in whole seconds, so the two tied
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
    import torch.distributed.launcher.api as api

    from clsf.distributed import launch

    def failure(rank, code):
        f = ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=code, error_file="/nonexistent")
        f.timestamp = 1700000000
        return f

    def fake_launch(config, entrypoint):
        def run(*args):
            raise ChildFailedError("clsf", {0: failure(0, survivor), 1: failure(1, -signal.SIGKILL)})
        return run

    monkeypatch.setattr(api, "elastic_launch", fake_launch)
    with pytest.raises(Exception) as e:
        launch.run_torch(["train"], 2)
    assert "process 1 of 2 was killed by SIGKILL" in str(e.value)


def test_nproc_refuses_nonsense_before_starting_anything(tmp_path):
    r = subprocess.run([sys.executable, "-m", "clsf", "train", "--engine", "torch", "--nproc", "0", "--runs-dir", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--nproc 0 must be at least 1" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "clsf", "train", "--engine", "torch", "--nproc", "2", "--runs-dir", str(tmp_path),
                        "dist_timeout_s=0"], capture_output=True, text=True)
    assert r.returncode == 2 and "dist_timeout_s=0" in r.stderr and not any(tmp_path.iterdir())


def test_a_checkpoint_inside_an_epoch_resumes_only_with_its_own_replica_count(tmp_path):
    from clsf import build_config, train
    from clsf.errors import UserError

    cfg = build_config(flags={"engine": "torch", "epochs": 2, "runs_dir": str(tmp_path), "run_name": "r"},
                       overrides=["data.name=synthetic", "data.train_subset=96"])
    run = train(cfg, quiet=True, stop_after_steps=2)  # inside epoch 1
    meta_file = run / "checkpoints" / "last" / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["step"] == 2 and meta["replicas"] == 1
    meta_file.write_text(json.dumps({**meta, "replicas": 2}))  # as two processes would have left it
    with pytest.raises(UserError, match="stopped inside epoch 1 with 2 replica"):
        train(resume=run, quiet=True)
    meta_file.write_text(json.dumps(meta))
    assert (train(resume=run, quiet=True) / "final.json").exists()


# -- two nodes: `clsf train --nodes A,B --node-rank I` on each, as on two machines -------------------


def _nodes(engine: str) -> str:
    """Two machines' addresses on the loopback range; distinct ports (TF's servers listen on every address)."""
    from clsf.distributed.launch import _free_ports

    return ",".join(f"127.0.0.{i + 1}:{p}" for i, p in enumerate(_free_ports(2)))


def _start_nodes(cmd: list[str], nodes: str) -> list[subprocess.Popen]:
    """Node 0 and node 1, each in its own session (its launcher and workers one process group)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([*cmd, "--nodes", nodes, "--node-rank", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, start_new_session=True) for i in range(2)]


# torch: long (CI's second step), for the default suite's 12 minutes; its two-process equivalence above stays
@pytest.mark.parametrize("engine", [pytest.param("torch", marks=pytest.mark.long),
                                    pytest.param("tf", marks=[pytest.mark.tf, pytest.mark.slow])])
def test_two_nodes_train_as_one_process_with_the_doubled_batch(tmp_path_factory, tmp_path, engine):
    cmd = [sys.executable, "-m", "clsf", "train", "--engine", engine, *COMMON, "--batch-size", "16", "--runs-dir", str(tmp_path),
           "--run-name", "two", "model.args.dropout=0", "data.train_subset=65"]
    nodes = _start_nodes(cmd, _nodes(engine))
    errs = [p.communicate(timeout=300)[1] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], errs
    with np.load(tmp_path / "two" / "checkpoints" / "last" / "weights.npz") as z:
        two = {k: z[k] for k in z.files}
    assert _max_diff(one_process(tmp_path_factory, 65, engine), two) <= 1e-5
    assert json.loads((tmp_path / "two" / "env.json").read_text())["replicas"]["processes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # node 0 alone wrote the run


@pytest.mark.slow  # the teeth of the test above, through torchrun's own command line (what docs/scale-out.md shows)
@pytest.mark.parametrize("sabotage", ["none", "same-share"])
def test_torchrun_two_nodes_equivalence_catches_a_broken_share_rule(tmp_path_factory, tmp_path, sabotage):
    from clsf.distributed.launch import _free_ports

    port = _free_ports(1)[0]
    args = ["--engine", "torch", *COMMON, "--batch-size", "16", "--runs-dir", str(tmp_path), "--run-name", "two",
            "model.args.dropout=0", "data.train_subset=67"]
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(i),
                                "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                                str(WORKER), sabotage, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True) for i in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in agents]
    assert [p.returncode for p in agents] == [0, 0], errs
    with np.load(tmp_path / "two" / "checkpoints" / "last" / "weights.npz") as z:
        diff = _max_diff(one_process(tmp_path_factory, 67), {k: z[k] for k in z.files})
    assert diff <= 1e-5 if sabotage == "none" else diff > 1e-4


def _kill_tree(pid: int) -> None:
    """A machine gone: its launcher and every process under it, at once."""
    tree, frontier = [pid], [pid]
    while frontier:
        kids = subprocess.run(["pgrep", "-P", str(frontier.pop())], capture_output=True, text=True).stdout.split()
        tree += map(int, kids)
        frontier += map(int, kids)
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


@pytest.mark.parametrize("engine", [pytest.param("torch", marks=pytest.mark.long),  # a kill test: CI's second step
                                    pytest.param("tf", marks=[pytest.mark.tf, pytest.mark.slow])])
def test_a_killed_node_stops_the_other_in_one_line_and_the_run_resumes(tmp_path, engine):
    run = tmp_path / "k"
    cmd = [sys.executable, "-m", "clsf", "train", "--engine", engine, "--data", "synthetic:train=3000", "--epochs", "30",
           "--batch-size", "16", "--runs-dir", str(tmp_path), "--run-name", "k", "--quiet", "dist_timeout_s=20"]
    lead, other = _start_nodes(cmd, _nodes(engine))
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last").is_dir():  # an epoch is done: node 1 goes down in the next
        assert lead.poll() is None and time.monotonic() < deadline, lead.communicate()[1][-2000:]
        time.sleep(0.2)
    _kill_tree(other.pid)
    killed = time.monotonic()
    _, err = lead.communicate(timeout=120)
    other.communicate()
    assert time.monotonic() - killed < 60  # measured: torch 2 s, tf 3-10 s (its heartbeats)
    assert lead.returncode == 6, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "another process stopped answering" in lines[0] and "clsf train --resume" in lines[0], err[-3000:]
    assert not (run / "final.json").exists()
    _resumed_in_one_process(run)  # on one machine now


@pytest.mark.parametrize("args, said", [
    (["--nodes", "127.0.0.1:29500,127.0.0.2:29500"], "--nodes and --node-rank go together"),
    (["--node-rank", "1"], "--nodes and --node-rank go together"),
    (["--nodes", "127.0.0.1,127.0.0.2:29500", "--node-rank", "0"], "'127.0.0.1' is not HOST:PORT"),
    (["--nodes", "a:1,a:1", "--node-rank", "0"], "names an address twice"),
    (["--nodes", "a:1,b:1", "--node-rank", "2"], "--node-rank 2 is not one of the 2 nodes"),
    (["--engine", "keras", "--nodes", "a:1,b:1", "--node-rank", "0"], "--engine tf"),
])
def test_nodes_refuses_nonsense_in_one_line_before_starting_anything(tmp_path, args, said):
    r = subprocess.run([sys.executable, "-m", "clsf", "train", "--engine", "torch", *args, "--runs-dir", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr and not any(tmp_path.iterdir()), r.stderr
