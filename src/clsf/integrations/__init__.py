"""What clsf hands to other tools, plugged into a run through callbacks (clsf.run.callbacks.Plugin):
MLflow tracking (tracking.py) and the Optuna trial reporter that lets a study's pruner stop a run
(pruning.py). Each imports its tool lazily; run/ never imports them: `clsf train` and `clsf.train`
(this package's `train`) hand them to clsf.run.train.train."""

from __future__ import annotations

from pathlib import Path


def plugins(trial: str | Path | None = None) -> list:
    """Every integration a run may use (each decides from the config whether it acts), and the
    reporter of a `clsf tune` trial when `trial` names its file."""
    from clsf.integrations.pruning import TrialPlugin
    from clsf.integrations.tracking import MlflowPlugin

    return [MlflowPlugin()] + ([TrialPlugin(trial)] if trial is not None else [])


def train(cfg=None, resume=None, **kwargs):
    """`clsf.train`: clsf.run.train.train (same arguments, same result) with the integrations plugged
    in, so that e.g. track=mlflow tracks the run."""
    from clsf.run.train import train as train_run

    return train_run(cfg, resume, plugins=[*plugins(), *kwargs.pop("plugins", ())], **kwargs)
