"""Run directories read back as plain data: config, environment, metrics, final results.

Nothing here imports a framework; a report is made from what the run wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from clsf.config import flatten
from clsf.errors import UserError
from clsf.run.rundir import RunDir


@dataclass
class RunRecord:
    path: Path
    config: dict  # nested, as in config.yaml
    env: dict
    metrics: list[dict]  # metrics.csv rows
    final: dict | None  # final.json; None while the run is unfinished
    label: str = ""  # the name shown in tables and legends
    flat: dict = field(init=False)

    def __post_init__(self):
        self.flat = flatten(self.config)
        self.label = self.label or self.path.name

    @property
    def status(self) -> str:
        if self.final is not None:
            stopped = self.final.get("stopped")  # early stopping, or a tune study's pruner
            how = {"early": "finished (early stop)", "pruned": "pruned"}.get(stopped)
            return f"{how} after epoch {len(self.metrics)}" if how else "finished"
        return f"stopped at epoch {len(self.metrics)}/{self.config['epochs']}"

    def row(self) -> dict:
        """One line of a runs table; times are sums over epochs, images/s the median epoch."""
        m = self.metrics
        f = self.final or {}
        model = "gan" if self.env.get("kind") == "gan" else self.config["model"]["name"]
        return {"run": self.label, "engine": self.config["engine"], "model": model,
                "seed": self.config["seed"], "epochs": len(m), "test_acc": f.get("test_acc"), "test_loss": f.get("test_loss"),
                "best_val_acc": max((r["val_acc"] for r in m if r.get("val_acc") is not None), default=None),
                "train_s": sum(r["seconds"] for r in m) if m else None,
                "images_per_s": float(np.median([r["images_per_s"] for r in m])) if m else None,
                "peak_mem_mb": max((r["peak_mem_mb"] for r in m if r.get("peak_mem_mb") is not None), default=None),
                "status": self.status}

    def predictions(self) -> dict | None:
        return RunDir(self.path).predictions()

    def init_logits(self):
        return RunDir(self.path).init_logits()


def read_run(path: str | Path, label: str = "") -> RunRecord:
    run = RunDir.open(path, None)
    try:
        config, env, final, metrics = run.raw_config(), run.env(), run.final(), run.metrics()
    except (yaml.YAMLError, json.JSONDecodeError, ValueError, KeyError) as e:
        raise UserError(f"{run} has a damaged file ({type(e).__name__}: {e}); rerun or remove that run.") from None
    return RunRecord(run.path, config, env, metrics, final, label)


def differing_keys(records: list[RunRecord], ignore=("run_name", "runs_dir")) -> list[str]:
    """Config keys whose value is not the same in every run, in config order."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r.flat if k not in keys]
    return [k for k in keys if k not in ignore and len({repr(r.flat.get(k)) for r in records}) > 1]
