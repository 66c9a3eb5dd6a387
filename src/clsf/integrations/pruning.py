"""A run that is a trial of a `clsf tune` study: each epoch's objective goes to the study, and the
study's pruner may stop the run there (a bad trial pays for a few epochs, not all of them).

`clsf tune` starts each trial as an ordinary `clsf train` process and names a trial file on its
command line (`clsf train --config C --trial FILE`): a JSON object with the study's storage URL,
study name, trial id, objective key and pruner settings, which `clsf train` turns into one more
callback. Not config.yaml: a run resumed by hand, without --trial, is an ordinary run. A storage
URL's password is in neither the file nor the command line (which `ps` shows): the file keeps the
URL with *** in its place, and the trial process takes the whole URL from CLSF_TUNE_STORAGE, the
variable that gives `clsf tune` itself a URL to keep off its command line.

A pruned run stops like an early-stopped one: at an epoch's end, finished (test split, final.json
with "stopped": "pruned"), and a resume does not train it on.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from clsf.errors import UserError
from clsf.run.callbacks import Callback, Plugin

STORAGE_ENV = "CLSF_TUNE_STORAGE"  # a storage URL kept off command lines and files (it may hold a password)
TRIAL_KEYS = {"storage", "study", "trial_id", "objective", "pruner"}


def shown_url(url: str) -> str:
    """A storage URL fit to print and write down: a password replaced by ***."""
    head, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0] and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{head}://{user}:***@{rest.split('@', 1)[1]}"
    return url


def write_trial(path: Path, storage_url: str, study: str, trial_id: int, objective: str, pruner: dict) -> None:
    """The trial file `clsf train --trial` reads (the URL without its password; see the module's text)."""
    from clsf.run.files import write_json

    write_json(path, {"storage": shown_url(storage_url), "study": study, "trial_id": trial_id,
                      "objective": objective, "pruner": pruner})


def read_trial(path: str | Path) -> dict:
    """A trial file's settings, with the storage URL whole; a file that is not one is one line."""
    p = Path(path)
    try:
        info = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--trial {path} could not be read as a trial file ({type(e).__name__}); --trial is for the "
                        "files clsf tune writes: drop it to train an ordinary run.") from None
    if not isinstance(info, dict) or set(info) != TRIAL_KEYS or not isinstance(info["trial_id"], int) \
            or not isinstance(info["pruner"], dict) or not all(isinstance(info[k], str) for k in ("storage", "study", "objective")):
        raise UserError(f"--trial {path} is not a clsf tune trial file (it needs exactly {', '.join(sorted(TRIAL_KEYS))}); "
                        "drop --trial to train an ordinary run.")
    whole = os.environ.get(STORAGE_ENV, "")
    if "***" in info["storage"] and shown_url(whole) == info["storage"]:
        info["storage"] = whole
    return info


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


class TrialPlugin(Plugin):
    """`clsf train --trial FILE`: every process reports to the trial the file names (a file that is
    not a trial file is refused here, before anything starts)."""

    decides = True  # its pruner stops the run like early stopping, before the checkpoint is written

    def __init__(self, path: str | Path):
        self.info = read_trial(path)

    def make(self, cfg, run, quiet: bool) -> Callback:
        return TrialReport(self.info, quiet)


class TrialReport(Callback):
    """Epoch by epoch: the objective to the study (step = epoch), then the pruner's decision.
    A storage that fails (or whose password CLSF_TUNE_STORAGE did not give) costs one warning: the
    run goes on unpruned (the run directory is the record, and the tune worker tells the study the
    result from it)."""

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
            # the trial another process asked for: Optuna has no public way to get a reporting Trial for
            # it (study.ask() makes a new one; a FrozenTrial's report does nothing), so the Trial is
            # built from its id, what Optuna's maintainers left users to do (optuna/optuna#2987)
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
