"""track=mlflow against a real MLflow: what a run logs (params, every epoch's metrics, the final
metrics, its files, an export), read back through MlflowClient; a resumed run continues its MLflow
run; compare groups its runs in one experiment; a server that is down costs one warning and no run;
and once against `mlflow server` started here on 127.0.0.1."""

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from clsf.cli import main

mlflow = pytest.importorskip("mlflow", reason="the track extra is not installed: pip install -e '.[track]'")
pytestmark = pytest.mark.extra
from mlflow.tracking import MlflowClient  # noqa: E402

DATA = "synthetic:train=80,test=20,size=8x8x3,classes=3"
TINY = ["model.args.widths=[4, 4]", "model.args.dense=8"]


def _train(tmp_path, name, *extra, epochs=2):
    return main(["train", "--engine", "torch", "--data", DATA, "--epochs", str(epochs), "--runs-dir", str(tmp_path),
                 "--run-name", name, "--quiet", "--track", "mlflow", *TINY, *extra])


def _runs(uri, experiment="clsf"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


@pytest.mark.torch
def test_a_resumed_run_continues_its_mlflow_run_without_repeating_epochs(tmp_path):
    from clsf import train
    from clsf.config import build_config

    cfg = build_config(flags={"engine": "torch", "epochs": 3, "runs_dir": str(tmp_path), "run_name": "r",
                              "data": {"name": DATA}, "track": "mlflow"}, overrides=TINY)
    run = train(cfg, quiet=True, stop_after=1)
    client, runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 1 and runs[0].info.status == "KILLED"  # paused: not finished, resumable
    train(resume=run, quiet=True)
    client, runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [1, 2, 3]
    # the artifacts of the default store sit beside its database, not in the folder the command ran from
    assert (tmp_path / "mlartifacts" / "clsf").is_dir() and not (Path.cwd() / "mlruns").exists()
    assert "final.json" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}


@pytest.mark.torch
def test_a_tracking_server_that_is_down_costs_one_warning_and_no_run(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    assert _train(tmp_path, "r", f"track_uri=http://127.0.0.1:{port}") == 0
    err = capsys.readouterr().err
    assert err.count("clsf: warning: MLflow tracking") == 1 and "the run goes on untracked" in err
    assert (tmp_path / "r" / "final.json").is_file()


def test_tracking_without_mlflow_is_refused_in_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert _train(tmp_path, "r") == 2
    assert "pip install -e '.[track]'" in capsys.readouterr().err and not (tmp_path / "r").exists()


def _check_logged(client, r, run_dir):
    """What a finished tracked run holds in MLflow, against its run directory."""
    assert r.info.run_name == run_dir.name and r.info.status == "FINISHED" and r.data.tags["clsf.engine"] == "torch"
    assert r.data.params["optim.lr"] == "0.003" and r.data.params["model.name"] == "seed-cnn"
    final = json.loads((run_dir / "final.json").read_text())
    assert r.data.metrics["test_acc"] == pytest.approx(final["test_acc"])
    history = client.get_metric_history(r.info.run_id, "val_acc")
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert [m.step for m in history] == [1, 2] and len(rows) == 3
    files = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "model.yaml", "final.json", "confusion.png", "history.png", "summary.txt"} <= files


@pytest.mark.torch
def test_a_tracked_run_has_its_params_metrics_files_and_export_in_mlflow(tmp_path):
    assert _train(tmp_path, "r", "optim.lr=0.003") == 0  # the default store: a SQLite file beside the runs
    client, runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 1
    _check_logged(client, runs[0], tmp_path / "r")
    assert main(["export", str(tmp_path / "r"), "--format", "onnx"]) == 0  # an export of the run joins it
    exported = {a.path for a in client.list_artifacts(runs[0].info.run_id, "export/onnx")}
    assert {"export/onnx/clsf.json", "export/onnx/model.onnx"} <= exported


@pytest.mark.torch
@pytest.mark.slow  # a server takes ~10 s to start; the same checks run on the SQLite store by default
def test_a_run_tracked_on_an_mlflow_server_has_its_params_metrics_and_files(tmp_path):
    """Against `mlflow server` started here on 127.0.0.1 (the default, a SQLite file, is the resume test's)."""
    import shutil

    if shutil.which("mlflow") is None or subprocess.run(["mlflow", "server", "--help"], capture_output=True).returncode:
        pytest.skip("the mlflow server is not installed (full mlflow, not mlflow-skinny)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'server.db'}", "--default-artifact-root", str(tmp_path / "artifacts"),
                               "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the mlflow server did not start"
                time.sleep(0.5)
        assert _train(tmp_path, "r", f"track_uri={uri}", "optim.lr=0.003") == 0
        client, runs = _runs(uri)
        assert len(runs) == 1
        _check_logged(client, runs[0], tmp_path / "r")
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.torch
@pytest.mark.slow  # two training processes; the grouping is a config the runner writes
def test_a_sweeps_runs_share_one_experiment_named_after_its_folder(tmp_path):
    out = tmp_path / "sw"
    assert main(["sweep", "--engine", "torch", "--data", DATA, "--epochs", "1", "--out", str(out), "--track", "mlflow",
                 "--grid", "batch_size=16,32", *TINY]) == 0
    client, runs = _runs(f"sqlite:///{out / 'runs' / 'mlflow.db'}", experiment="sw")  # the default store, beside the runs
    assert sorted(r.info.run_name for r in runs) == ["bs16-s0", "bs32-s0"]
    assert all(r.info.status == "FINISHED" for r in runs)

