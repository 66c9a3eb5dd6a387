"""`track=mlflow`: a run logged to MLflow as it trains — the resolved config as params, every epoch's
row as metrics (step = epoch), the final test metrics, and the run's files as artifacts (config,
model file, pictures, summary; an export when `clsf export` makes one).

The run directory stays the record: MLflow gets a copy. A tracking server that is down, refuses or
times out costs one warning and nothing else — the run trains and writes its folder as always. A
resumed run continues its MLflow run (the id is kept in the run directory) and logs only the epochs
it trains; compare and sweep put their runs in one MLflow experiment named after their folder.

The tracking URI: `track_uri`, else $MLFLOW_TRACKING_URI, else a SQLite file beside the runs,
`sqlite:///<runs_dir>/mlflow.db` (`mlflow ui --backend-store-uri` that URI shows them).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from clsf.config import Config, flatten
from clsf.errors import UserError
from clsf.run.callbacks import Callback, Plugin
from clsf.run.rundir import RunDir

EXPERIMENT = "clsf"  # where a run goes when track_experiment is not set (compare/sweep: their folder's name)


def tracking_uri(cfg: Config) -> str:
    if cfg.track_uri:
        return cfg.track_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(cfg.runs_dir).resolve() / 'mlflow.db'}"


def local_artifacts(uri: str, experiment: str) -> str | None:
    """For a SQLite store, artifacts beside the database (<folder>/mlartifacts/<experiment>): MLflow's
    own default for a SQL store is ./mlruns in whatever folder the command ran from. A server
    decides for itself (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / experiment).resolve().as_uri()


def require_mlflow() -> None:
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise UserError("track=mlflow needs MLflow: pip install -e '.[track]' (or leave track out).")
    import logging

    for name in ("mlflow", "alembic"):  # MLflow's INFO lines as it creates its database on first use
        logging.getLogger(name).setLevel(logging.WARNING)


class MlflowTracking(Callback):
    """One MLflow run per clsf run, through MlflowClient (no global 'active run' state)."""

    def __init__(self, cfg: Config, run: RunDir):
        require_mlflow()
        # a server that is down: fail fast, once, instead of retrying for minutes inside training
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.cfg, self.run, self.uri = cfg, run, tracking_uri(cfg)
        self.client = self.run_id = None
        self.dead = False

    def _safe(self, what: str, fn, *args, **kwargs):
        """fn(...), or, on any failure, one warning and no more tracking for this run."""
        if self.dead:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever MLflow or the network raise, the run goes on
            self.dead = True
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            print(f"clsf: warning: MLflow tracking at {self.uri} failed while {what} ({type(e).__name__}: {first}); "
                  f"the run goes on untracked, and {self.run} holds everything.", file=sys.stderr)
            return None

    def _start(self) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        saved = self.run.tracking()
        if saved and saved.get("uri") == self.uri:  # a resumed run continues its MLflow run
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = self.cfg.track_experiment or EXPERIMENT
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            name, artifact_location=local_artifacts(self.uri, name))
        self.run_id = self.client.create_run(experiment_id, run_name=self.run.name, tags={
            "clsf.run_dir": str(self.run.path.resolve()), "clsf.engine": self.cfg.engine, "clsf.model": self.cfg.model.name,
        }).info.run_id
        self.run.write_tracking({"uri": self.uri, "run_id": self.run_id, "experiment": name})
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in flatten(self.cfg.to_dict()).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def on_train_start(self, state):
        self._safe("starting the MLflow run", self._start)

    def _metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()
                                                    if isinstance(v, (int, float)) and v == v])

    def on_epoch_end(self, state, row, improved):
        if self.run_id:
            self._safe(f"logging epoch {row['epoch']}", self._metrics, {k: v for k, v in row.items() if k != "epoch"},
                       row["epoch"])

    def on_finish(self, final: dict) -> None:
        """The test metrics and the run's files, then the MLflow run marked finished."""
        if not self.run_id:
            return
        scalars = {k: v for k, v in final.items() if k.startswith("test_") and isinstance(v, (int, float))}
        self._safe("logging the final metrics", self._metrics, scalars, final.get("epochs", 0))
        for path in self.run.record_files():
            self._safe(f"uploading {path.name}", self.client.log_artifact, self.run_id, str(path))
        self._safe("closing the MLflow run", self.client.set_terminated, self.run_id, "FINISHED")
        self.run_id = None

    def on_train_end(self, state):
        if self.run_id:  # stopped before the finish (Ctrl-C, a pause, an error): resumable, so not FINISHED
            self._safe("closing the MLflow run", self.client.set_terminated, self.run_id, "KILLED")


class MlflowPlugin(Plugin):
    """track=mlflow: MLflow checked for before anything is written, then the lead process tracks."""

    keys = ("track",)

    def check(self, cfg: Config) -> None:
        if cfg.track == "mlflow":
            require_mlflow()

    def make(self, cfg: Config, run: RunDir | None, quiet: bool) -> Callback | None:
        return MlflowTracking(cfg, run) if cfg.track == "mlflow" and run is not None else None


def log_export(run: RunDir, folder: Path) -> None:
    """An export of a tracked run joins its MLflow run's artifacts (under export/FORMAT)."""
    saved = run.tracking()
    if not saved:
        return
    try:
        require_mlflow()
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=saved["uri"]).log_artifacts(saved["run_id"], str(folder), f"export/{folder.name}")
    except Exception as e:  # noqa: BLE001 - the export itself is written and verified either way
        print(f"clsf: warning: the export was not added to MLflow run {saved['run_id']} at {saved['uri']} "
              f"({type(e).__name__}: {str(e).strip()[:160]}); it is in {folder}.", file=sys.stderr)
