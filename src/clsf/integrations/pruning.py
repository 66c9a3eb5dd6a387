"""A run that is a trial of a `clsf tune` study: each epoch's objective goes to the study, and the
study's pruner may stop the run there (a bad trial pays for a few epochs, not all of them).

`clsf tune` starts each trial as an ordinary `clsf train` process and tells it which trial it is
through the environment (CLSF_TUNE_TRIAL, a JSON object: storage URL, study name, trial id,
objective key, pruner settings), so the storage URL (which may hold a password) never lands in
the run's config.yaml. A run resumed by hand, without that variable, is an ordinary run.

A pruned run stops like an early-stopped one: at an epoch's end, finished (test split, final.json
with "stopped": "pruned"), and a resume does not train it on.
"""

from __future__ import annotations

import json
import os
import sys

from clsf.run.callbacks import Callback

ENV = "CLSF_TUNE_TRIAL"


def make_pruner(settings: dict):
    """Optuna's pruner from the study's settings: {"name": "median"|"halving"|"none", "startup_trials",
    "warmup_epochs"}. The tune command and every trial process build the same one (Optuna keeps
    the pruner in memory, not in the storage)."""
    import optuna

    name = settings.get("name", "median")
    warmup = settings.get("warmup_epochs", 0)  # epochs every trial trains before it can be pruned (steps are epochs, from 1)
    if name == "median":  # stop a trial whose value at an epoch is worse than the median of earlier trials' there
        return optuna.pruners.MedianPruner(n_startup_trials=settings.get("startup_trials", 5), n_warmup_steps=warmup + 1)
    if name == "halving":  # successive halving: keep the best 1/3 at epochs 1, 3, 9, ... (rungs)
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup + 1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_storage(url: str, **heartbeat):
    """An RDB storage that waits for a busy SQLite file instead of failing (several processes write it)."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **heartbeat)


def trial_reporter(quiet: bool) -> Callback | None:
    """The callback for this process's trial, or None when it is not a trial."""
    text = os.environ.get(ENV)
    if not text:
        return None
    return TrialReport(json.loads(text), quiet)


class TrialReport(Callback):
    """Epoch by epoch: the objective to the study (step = epoch), then the pruner's decision.
    A storage that fails costs one warning: the run goes on unpruned (the run directory is the
    record, and the tune worker tells the study the result from it)."""

    def __init__(self, info: dict, quiet: bool):
        self.info, self.quiet, self.trial, self.dead = info, quiet, None, False

    def _warn(self, e: Exception) -> None:
        self.dead = True
        print(f"clsf: warning: the tune study could not be reached ({type(e).__name__}: {str(e).strip()[:160]}); "
              "this trial trains on without pruning.", file=sys.stderr)

    def on_train_start(self, state):
        try:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.load_study(study_name=self.info["study"], storage=open_storage(self.info["storage"]),
                                      pruner=make_pruner(self.info["pruner"]))
            self.trial = optuna.trial.Trial(study, self.info["trial_id"])
        except Exception as e:  # noqa: BLE001 - whatever the storage raises, the run goes on
            self._warn(e)

    def on_epoch_end(self, state, row, improved):
        if self.trial is None or self.dead:
            return
        key = self.info["objective"]
        value = row.get(key)
        if value is None:
            return
        try:
            self.trial.report(float(value), state.epoch)
            prune = self.trial.should_prune()
        except Exception as e:  # noqa: BLE001
            self._warn(e)
            return
        if prune and state.epoch < state.epochs and state.stop is None:  # (early stopping, if it fired, stands)
            state.stopped_early, state.stopped = True, "pruned"  # finished: a resume does not train it on
            state.request_stop("pruned")
            if not self.quiet:
                why = ("is not in the best third of the trials that reached this epoch" if self.info["pruner"].get("name") ==
                       "halving" else "is worse than the median of earlier trials at this epoch")
                print(f"pruned after epoch {state.epoch}: {key} {value:.4f} {why}")
