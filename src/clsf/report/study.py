"""A `clsf tune` folder's report: the study read back from its storage through Optuna (the record of
trials, states, parameters and per-epoch values), Optuna's parameter importances, and the runs.

The study's storage: the folder's study.db, or the URL the tune command was given (plan.json keeps
it with any password replaced by ***; give the real one in $CLSF_TUNE_STORAGE).
"""

from __future__ import annotations

import os
from pathlib import Path

from clsf import plots
from clsf.errors import UserError
from clsf.run.folder import Folder


def study_storage(folder: Path, plan: dict, storage: str | None = None) -> str:
    url = storage or os.environ.get("CLSF_TUNE_STORAGE") or plan.get("storage") or f"sqlite:///{Folder(folder).study.resolve()}"
    if "***" in url:
        raise UserError(f"{folder}'s study is in {url}; give its URL with the password in $CLSF_TUNE_STORAGE to report on it.")
    return url


def read_study(folder: Path, plan: dict, storage: str | None = None) -> tuple[list[dict], dict]:
    """Every trial as plain data (number, state, value, params, per-epoch values, run name), and the
    parameters' importances."""
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise UserError("a tune folder's report reads its study with Optuna: pip install -e '.[tune]'.")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = study_storage(folder, plan, storage)
    try:
        study = optuna.load_study(study_name=plan["study"], storage=url)
    except KeyError:
        raise UserError(f"{folder}: study '{plan['study']}' is not in {url}; was the folder moved from its storage?") from None
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "intermediate": {int(k): v for k, v in t.intermediate_values.items()}, "run": t.user_attrs.get("run"),
               "seconds": t.duration.total_seconds() if t.duration else None} for t in study.get_trials(deepcopy=False)]
    return trials, _importances(study)


def _importances(study) -> dict:
    """Optuna's fANOVA importances of the parameters for the objective (complete trials; needs two)."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2 or not any(len({repr(t.params.get(k)) for t in done}) > 1 for k in done[0].params):
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)))
    except (RuntimeError, ValueError):  # e.g. a parameter with one value among complete trials
        return {}


def study_summary(plan: dict, trials: list[dict], importances: dict, planned: dict[int, int]) -> dict:
    """Counts by state, the best trials (best first), epochs the pruner saved (`planned`: each
    trial's epochs, by number), importances."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    sign = -1 if plan["direction"] == "maximize" else 1
    best = sorted((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: sign * t["value"])
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    trained = {t["number"]: len(t["intermediate"]) for t in trials}
    saved = sum(max(0, planned[t["number"]] - trained[t["number"]]) for t in pruned)
    return {"kind": "tune", "objective": plan["objective"], "direction": plan["direction"], "counts": counts,
            "best": [{k: t[k] for k in ("number", "value", "params", "run")} for t in best],
            "pruned": [{"number": t["number"], "epochs": trained[t["number"]], "of": planned[t["number"]], "run": t["run"]}
                       for t in pruned],
            "epochs_trained": sum(trained.values()), "epochs_saved": saved,
            "importances": {k: round(v, 4) for k, v in importances.items()}}


def study_section(page, plan: dict, folder: Path, records: dict, storage: str | None = None) -> dict:
    """The study's part of a tune folder's page (`records`: its runs, already read, by name)."""
    from clsf.report.format import fmt

    trials, importances = read_study(folder, plan, storage)
    s = study_summary(plan, trials, importances, {t["number"]: _planned_epochs(records, plan, t) for t in trials})
    c = s["counts"]
    page.text(f"{len(trials)} trials: {c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, "
              f"{c.get('FAIL', 0)} failed, {c.get('RUNNING', 0) + c.get('WAITING', 0)} running or queued. "
              f"Objective {plan['objective']} ({plan['direction']}d) at each trial's last epoch; pruner "
              f"{plan['pruner']['name']}, sampler {plan['sampler']}, every trial on seed {plan['seed']}. "
              f"The pruner saved {s['epochs_saved']} of {s['epochs_saved'] + s['epochs_trained']} planned epochs.", css="verdict")
    keys = list(plan["space"])
    page.heading("Best trials")
    page.table(["trial", plan["objective"]] + keys + ["run"],
               [[t["number"], fmt(t["value"])] + [_param(t["params"].get(k)) for k in keys] + [t["run"] or "-"]
                for t in s["best"][:10]], caption="complete trials, best first (at most 10)")
    if trials:
        page.heading("Objective over trials")
        page.image("study_history", plots.plot_study(trials, plan["objective"], plan["direction"]),
                   "each trial's value (pruned: its last reported epoch) and the best so far")
        page.image("study_curves", plots.plot_trial_curves(trials, plan["objective"]),
                   "every trial's per-epoch value; pruned trials end in a cross where the pruner stopped them")
    if s["importances"]:
        page.heading("Parameter importances")
        page.image("importances", plots.plot_importances(s["importances"], plan["objective"]),
                   "Optuna's fANOVA importance of each parameter for the objective (complete trials)")
    if s["pruned"]:
        page.heading(f"Pruned trials ({len(s['pruned'])})")
        page.table(["trial", "epochs trained", "of", "run"],
                   [[p["number"], p["epochs"], p["of"], p["run"] or "-"] for p in s["pruned"]])
    return s


def _param(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _planned_epochs(records: dict, plan: dict, trial: dict) -> int:
    """The epochs a trial was to train: its run's config (a searched recipe or epochs may set them)."""
    rec = records.get(trial["run"])
    return int(rec.config["epochs"]) if rec is not None else int(trial["params"].get("epochs", plan["base"]["epochs"]))
