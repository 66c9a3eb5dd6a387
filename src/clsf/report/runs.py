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
from clsf.run import rundir


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
            return "finished"
        return f"stopped at epoch {len(self.metrics)}/{self.config['epochs']}"

    def row(self) -> dict:
        """One line of a runs table; times are sums over epochs, images/s the median epoch."""
        m = self.metrics
        f = self.final or {}
        return {"run": self.label, "engine": self.config["engine"], "model": self.config["model"]["name"],
                "seed": self.config["seed"], "epochs": len(m), "test_acc": f.get("test_acc"), "test_loss": f.get("test_loss"),
                "best_val_acc": max((r["val_acc"] for r in m if r.get("val_acc") is not None), default=None),
                "train_s": sum(r["seconds"] for r in m) if m else None,
                "images_per_s": float(np.median([r["images_per_s"] for r in m])) if m else None,
                "peak_mem_mb": max((r["peak_mem_mb"] for r in m if r.get("peak_mem_mb") is not None), default=None),
                "status": self.status}

    def predictions(self) -> dict | None:
        path = self.path / "predictions.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def read_run(path: str | Path, label: str = "") -> RunRecord:
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path} is not a clsf run directory (no config.yaml); pass a run folder or a folder of runs.")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
        env = rundir.read_json(path / "env.json") if (path / "env.json").exists() else {}
        final = rundir.read_json(path / "final.json") if (path / "final.json").exists() else None
        metrics = rundir.read_metrics(path)
    except (yaml.YAMLError, json.JSONDecodeError, ValueError, KeyError) as e:
        raise UserError(f"{path} has a damaged file ({type(e).__name__}: {e}); rerun or remove that run.") from None
    return RunRecord(path, config, env, metrics, final, label)


def find_runs(folder: Path) -> list[Path]:
    """Run directories at or below `folder` (not inside a run's own checkpoints), sorted by path."""
    folder = Path(folder)
    if (folder / "config.yaml").is_file():
        return [folder]
    found = []
    for cfg in sorted(folder.rglob("config.yaml")):
        run = cfg.parent
        if "checkpoints" not in run.relative_to(folder).parts:
            found.append(run)
    return found


def differing_keys(records: list[RunRecord], ignore=("run_name", "runs_dir")) -> list[str]:
    """Config keys whose value is not the same in every run, in config order."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r.flat if k not in keys]
    return [k for k in keys if k not in ignore and len({repr(r.flat.get(k)) for r in records}) > 1]
