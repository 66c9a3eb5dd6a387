"""`clsf tune`: an Optuna study over config keys, every trial an ordinary run in its own process.

    clsf tune --recipe fast-seed-cnn --space space.yaml --trials 20 --workers 2

The search space is a YAML file:

    space:
      optim.lr: {low: 1.0e-4, high: 0.03, log: true}    # a float range (log: sampled on a log scale)
      batch_size: [32, 64, 128]                          # a list: one of these values
      model.args.dense: {low: 64, high: 256, step: 64}   # ints when low, high (and step) are ints
      recipe: [seed, fast-seed-cnn]                      # a named recipe is a key like any other
    enqueue:                                             # optional: points tried first (e.g. the recipe's own)
      - {optim.lr: 0.003, batch_size: 64}
    objective: val_acc                                   # a per-epoch metric; *_acc maximised, *_loss minimised
    sampler: tpe                                         # tpe (default) | random
    pruner: {name: median, startup_trials: 5, warmup_epochs: 1}   # median | halving | none
    trials: 20                                           # --trials overrides

  <folder>/
    plan.json          what was asked (space, objective, sampler, pruner, seed, the base config)
    study.db           the Optuna study (SQLite) unless --storage names another database
    configs/ runs/trial-NNNN/ logs/    as for compare and sweep: every trial is an ordinary run
    report.html, report.md, summary.json

A worker is a loop: ask the study for a trial, train it as `clsf train` in a child process (whose
TrialReport callback reports each epoch's objective and lets the pruner stop it), tell the study
the result. `--workers K` runs K workers on this machine, each with its share of the cores' threads;
any number of `clsf tune` commands on other machines given the same --storage URL and --study name
join the same study. Re-running the command continues the study until it holds --trials finished
(complete or pruned) trials.

A worker that dies (kill -9, a lost machine) stops sending its trial's heartbeat; after GRACE_S
seconds another worker marks that trial failed and queues it again with the same parameters, and
the worker that takes it resumes the trial's run directory from its last checkpoint (same run
name, trial-NNNN of the first attempt). Its training child gets SIGINT when the worker dies and
stops with a checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import yaml

from clsf.config import Config, apply, nest, read_yaml, validate
from clsf.distributed.cores import check_cores, thread_env, threads_each
from clsf.errors import RunsFailed, UserError
from clsf.experiments import runner
from clsf.experiments.sweep import SHAPE_KEYS, check_models
from clsf.run.progress import clock
from clsf.integrations.pruning import STORAGE_ENV, make_pruner, open_storage, shown_url, write_trial
from clsf.run import files
from clsf.run.rundir import RunDir
from clsf.words import count
from clsf.run.folder import Folder

OBJECTIVES = ("val_acc", "val_loss", "train_acc", "train_loss")  # metrics.csv columns a trial is judged by
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")
MAX_TRIALS = 10_000  # a study's trials, from the space file or --trials: each is a whole training run
NOT_SEARCHABLE = ("engine", "seed", "run_name", "runs_dir", "init_from", "track", "track_uri", "track_experiment")
HEARTBEAT_S = float(os.environ.get("CLSF_TUNE_HEARTBEAT_S", 10))  # seconds between a running trial's heartbeats
GRACE_S = 3 * HEARTBEAT_S  # seconds without one before the trial counts as lost and is queued again
MAX_RETRY = 3  # times a lost trial is queued again
WORKER_FLAG = "--worker-of"  # PID:I on the command line of an extra worker: it trains, the command PID reports


def require_optuna() -> None:
    import importlib.util
    import warnings

    if importlib.util.find_spec("optuna") is None:
        raise UserError("clsf tune needs Optuna: pip install -e '.[tune]'.")
    from optuna.exceptions import ExperimentalWarning

    # Optuna marks its heartbeat helpers experimental and says heartbeats are "supposed to be used with
    # Study.optimize"; clsf's ask/tell workers send their own (tested in tests/test_tune.py)
    warnings.simplefilter("ignore", ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


# --- the search space -------------------------------------------------------------------------

def read_space(path: str | Path) -> dict:
    """The space file as settings: {"space": {key: spec}, "enqueue": [...], "objective", "sampler",
    "pruner": {...}, "trials"}; every mistake one line naming the key."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"search space file '{path}' " + ("is not a regular file" if p.exists() else "does not exist")
                        + "; give a YAML file with a space: mapping (see docs/tune.md).")
    doc = read_yaml(p, "search space file")
    if not isinstance(doc, dict) or not isinstance(doc.get("space"), dict) or not doc["space"]:
        raise UserError(f"{path} needs a 'space:' mapping of config keys to ranges or lists, e.g. "
                        "space: {optim.lr: {low: 1.0e-4, high: 0.1, log: true}, batch_size: [32, 64]}.")
    unknown = set(doc) - {"space", "enqueue", "objective", "sampler", "pruner", "trials"}
    if unknown:
        raise UserError(f"{path}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}; use space, enqueue, "
                        "objective, sampler, pruner, trials.")
    space = {str(k): _dimension(str(k), v, path) for k, v in doc["space"].items()}
    objective = doc.get("objective", "val_acc")
    if objective not in OBJECTIVES:
        raise UserError(f"{path}: objective '{objective}' is not a per-epoch metric; use one of {', '.join(OBJECTIVES)}.")
    sampler = doc.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise UserError(f"{path}: sampler '{sampler}' is not known; use one of {', '.join(SAMPLERS)}.")
    pruner = doc.get("pruner", {"name": "median"})
    pruner = {"name": pruner} if isinstance(pruner, str) else pruner
    if not isinstance(pruner, dict) or pruner.get("name", "median") not in PRUNERS or \
            set(pruner) - {"name", "startup_trials", "warmup_epochs"} or \
            any(not isinstance(pruner.get(k, 0), int) or pruner.get(k, 0) < 0 for k in ("startup_trials", "warmup_epochs")):
        raise UserError(f"{path}: pruner must be one of {', '.join(PRUNERS)}, or {{name: median, startup_trials: N, "
                        "warmup_epochs: N}} with whole numbers >= 0.")
    enqueue = doc.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(p, dict) and set(map(str, p)) <= set(space) for p in enqueue):
        raise UserError(f"{path}: enqueue must be a list of mappings over the space's keys ({', '.join(space)}).")
    trials = doc.get("trials", 20)
    if not isinstance(trials, int) or isinstance(trials, bool) or not 1 <= trials <= MAX_TRIALS:
        raise UserError(f"{path}: trials={trials!r} must be a whole number in [1, {MAX_TRIALS:,}].")
    enqueue = [{str(k): _enqueued(str(k), v, space[str(k)], path) for k, v in p.items()} for p in enqueue]
    return {"space": space, "enqueue": enqueue, "objective": objective,
            "direction": "minimize" if objective.endswith("_loss") else "maximize", "sampler": sampler,
            "pruner": {"name": "median", **pruner}, "trials": trials}


def _dimension(key: str, v, path) -> dict:
    """A key's range: {"choices": [...]} or {"low", "high", "log", "step", "int"}."""
    where = f"{path}: space key '{key}'"
    if key in NOT_SEARCHABLE:
        raise UserError(f"{where} cannot be searched; fix it with a flag (or use clsf compare for engines).")
    if isinstance(v, list):
        if not v or len({repr(x) for x in v}) != len(v):
            raise UserError(f"{where}: a list of choices must hold distinct values.")
        if all(x is None or isinstance(x, (bool, int, float, str)) for x in v):
            return {"choices": v}
        # lists or mappings (e.g. model.args.widths: [[32, 64], [64, 128]]): Optuna keeps plain values,
        # so each choice is kept as its YAML text and read back for the trial
        return {"choices": [yaml.safe_dump(x, default_flow_style=True).strip() for x in v], "yaml": True}
    if not isinstance(v, dict) or not {"low", "high"} <= set(v) or set(v) - {"low", "high", "log", "step"}:
        raise UserError(f"{where} must be a list of choices or {{low: A, high: B}} (optional log: true, step: S).")
    low, high, step, log = v["low"], v["high"], v.get("step"), bool(v.get("log", False))
    nums = [x for x in (low, high, step) if x is not None]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < float("inf") for x in nums):
        raise UserError(f"{where}: low, high and step must be finite numbers (YAML reads 1e-4 as text: write 1.0e-4).")
    if not low < high or (log and low <= 0) or (step is not None and (step <= 0 or log)):
        raise UserError(f"{where}: need low < high (and low > 0 with log: true; step > 0 and not with log).")
    return {"low": low, "high": high, "log": log, "step": step, "int": all(isinstance(x, int) for x in nums)}


def _enqueued(key: str, v, dim: dict, path):
    """An enqueued point's value, as the study keeps it; it must be one the space can take."""
    if dim.get("yaml"):
        v = yaml.safe_dump(v, default_flow_style=True).strip()
    ok = v in dim["choices"] if "choices" in dim else (
        isinstance(v, (int, float)) and not isinstance(v, bool) and dim["low"] <= v <= dim["high"])
    if not ok:
        where = f"one of {dim['choices']}" if "choices" in dim else f"in [{dim['low']}, {dim['high']}]"
        raise UserError(f"{path}: enqueued {key}={v!r} is not {where}; enqueue values the space holds.")
    return v


def distributions(space: dict) -> dict:
    import optuna.distributions as d

    out = {}
    for key, dim in space.items():
        if "choices" in dim:
            out[key] = d.CategoricalDistribution(dim["choices"])
        elif dim["int"]:
            out[key] = d.IntDistribution(dim["low"], dim["high"], log=dim["log"], step=dim["step"] or 1)
        else:
            out[key] = d.FloatDistribution(dim["low"], dim["high"], log=dim["log"], step=dim["step"])
    return out


def trial_config(make_config, params: dict, seed: int, space: dict) -> Config:
    """The config of a trial: the recipe (a searched one, if `recipe` is in the space) with the
    command's settings, then the trial's values."""
    cfg = copy.deepcopy(make_config(params.get("recipe")))
    for key, value in params.items():
        if key != "recipe":
            apply(cfg, nest(key, yaml.safe_load(value) if space[key].get("yaml") else value))
    cfg.seed = seed  # every trial on the same seed: the comparison is between settings, not draws
    return validate(cfg)


def check_space(make_config, settings: dict, seed: int) -> Config:
    """Every value each key can take (each choice, both ends of each range, and every enqueued
    point) validated, and the model spec built where the model can change, before any trial trains.
    Returns the base config (every key at its first value)."""
    space = settings["space"]
    ends = {k: d["choices"] if "choices" in d else [d["low"], d["high"]] for k, d in space.items()}
    first = {k: v[0] for k, v in ends.items()}
    points = [first] + [{**first, k: v} for k, vs in ends.items() for v in vs[1:]] + \
             [{**first, **p} for p in settings["enqueue"]]
    checked = []
    for point in points:
        try:
            checked.append((point, trial_config(make_config, point, seed, space)))
        except UserError as e:
            raise UserError(f"search space point {point}: {e}") from None
    base = checked[0][1]
    if settings["objective"].startswith("val_") and not base.data.val_split:
        raise UserError(f"objective {settings['objective']} needs a validation split, and data.val_split is 0; set "
                        "data.val_split=0.1 (or use objective: train_loss).")
    if any(k.startswith("model.") or k in SHAPE_KEYS or k == "recipe" for k in space):
        check_models(base, checked, "search space point")
    return base


# --- the folder and the study -----------------------------------------------------------------

def plan_tune(make_config, settings: dict, seed: int) -> dict:
    base = check_space(make_config, settings, seed)
    asked = {k: settings[k] for k in ("space", "enqueue", "objective", "direction", "sampler", "pruner")}
    return {"kind": "tune", "model": base.model.name, "data": base.data.name, "engine": base.engine, "seed": seed,
            **asked, "base": runner.base_config(base)}


def default_storage(folder: Path) -> str:
    return f"sqlite:///{Folder(folder).study.resolve()}"


def sampler_seed(plan_seed: int, worker: int, shared: bool) -> int:
    """Each worker's sampler seed. Workers that drew from the same seed would train the same random
    start-up points (TPE's first trials), so each worker of a command has its own index, and over a
    storage shared between machines the machine's name counts too. The command's own worker on its
    folder's database keeps the plan's seed: a one-worker study repeats."""
    import socket
    import zlib

    if worker == 0 and not shared:
        return plan_seed
    parts = [plan_seed, worker] + ([zlib.crc32(socket.gethostname().encode())] if shared else [])
    return int(np.random.SeedSequence(parts).generate_state(1)[0])


def worker_storage(storage_url: str, heartbeat: bool):
    """The study's storage as a worker opens it (`heartbeat`: its trials beat, and a lost one's is
    failed and queued again) -- kept by the worker, whose heartbeats and trial ids go through its
    public methods (Optuna's Study and Trial keep theirs private)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    beat = dict(heartbeat_interval=max(1, int(HEARTBEAT_S)), grace_period=max(2, int(GRACE_S)),
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(MAX_RETRY, inherit_intermediate_values=True)
                ) if heartbeat else {}
    return open_storage(storage_url, **beat)


def trial_id(storage, study, trial) -> int:
    """The trial's id in the storage, through the storage's public API."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), trial.number)


def load_study(plan: dict, storage_url: str, study_name: str, heartbeat: bool, worker: int = 0, storage=None):
    """The study (created on first use), refused if it was made for another search; its sampler is
    this worker's (`sampler_seed`). `storage`: the worker's own (worker_storage), else one opened here."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = storage or worker_storage(storage_url, heartbeat)
        seed = sampler_seed(plan["seed"], worker, shared=plan.get("storage") is not None)
        sampler = (optuna.samplers.TPESampler(seed=seed) if plan["sampler"] == "tpe"
                   else optuna.samplers.RandomSampler(seed=seed))
        study = optuna.create_study(storage=storage, study_name=study_name, direction=plan["direction"],
                                    sampler=sampler, pruner=make_pruner(plan["pruner"]), load_if_exists=True)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's errors: a URL it cannot use, or a database it cannot reach
        if isinstance(e, (ImportError, ValueError)) or type(e).__name__ in ("NoSuchModuleError", "ArgumentError"):
            raise UserError(f"the study storage {shown_url(storage_url)} cannot be opened ({str(e).strip()[:160]}); "
                            "give a database URL such as sqlite:///study.db or postgresql://user:pw@host/db "
                            "(with its driver installed).") from None
        raise UserError(f"the study storage {shown_url(storage_url)} is not reachable ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:160]}); check the URL and that the database is up.") from None
    made_for = study.user_attrs.get("clsf_plan")
    if made_for is None:
        study.set_user_attr("clsf_plan", runner.plan_id(plan))
    elif made_for != runner.plan_id(plan):
        raise UserError(f"study '{study_name}' in {shown_url(storage_url)} was made for another search (plan {made_for}); "
                        "give the same space and settings, or another --study name.")
    return study


@contextlib.contextmanager
def asking(storage_url: str, study_name: str):
    """One worker of the study asks at a time, so the count of trials it checks stays true while it
    adds one: exactly --trials, however many workers and machines. On a database server the lock is
    the server's own, which every machine reaching it shares and which the server drops with the
    connection of a worker that dies (PostgreSQL's advisory lock, MySQL's GET_LOCK); on SQLite, a
    lock file beside the database (SQLite is one machine's)."""
    dialect = storage_url.split(":", 1)[0].split("+", 1)[0]
    if dialect in ("postgresql", "mysql", "mariadb"):
        with _server_lock(storage_url, dialect, study_name):
            yield
        return
    path = storage_url.partition(":///")[2] if dialect == "sqlite" else ""
    if not path or path == ":memory:":  # another kind of database: this machine's workers take turns
        import tempfile
        import zlib

        path = str(Path(tempfile.gettempdir()) / f"clsf-tune-{zlib.crc32(study_name.encode()):08x}")
    lock = Path(path + ".ask.lock")
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


_LOCK_ENGINES: dict[str, object] = {}  # one connection pool per storage URL, for the lock alone


@contextlib.contextmanager
def _server_lock(storage_url: str, dialect: str, study_name: str):
    """A session lock on the database server, named after the study, held on a connection of its own."""
    import hashlib

    import sqlalchemy as sa

    engine = _LOCK_ENGINES.get(storage_url)
    if engine is None:
        engine = _LOCK_ENGINES[storage_url] = sa.create_engine(storage_url, pool_size=1, pool_pre_ping=True)
    name = f"clsf-tune:{study_name}"
    if dialect == "postgresql":  # a bigint key: the name's hash
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        take, give, args = "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)", {"k": key}
    else:  # MySQL/MariaDB: a named lock, names at most 64 characters; -1: wait as long as it takes
        take, give, args = "SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)", {"k": name[:64]}
    try:
        conn = engine.connect()
        conn.execute(sa.text(take), args)
    except sa.exc.SQLAlchemyError as e:
        raise UserError(f"the study storage {shown_url(storage_url)} is not reachable ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:160]}); check the URL and that the database is up.") from None
    try:
        yield
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError):  # a connection lost meanwhile took the lock with it
            conn.execute(sa.text(give), args)
            conn.rollback()
        conn.close()


def run_name(storage, study, trial) -> str:
    """trial-NNNN of the trial's first attempt: a retry resumes the lost attempt's run directory."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = storage.get_trial(trial_id(storage, study, trial))
    first = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    return f"trial-{frozen.number if first is None else first:04d}"


def _next_trial(study, folder: Path, plan: dict, trials: int, storage_url: str):
    """A trial to train, None to wait for others to finish theirs, or "done"."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    with asking(storage_url, study.study_name):
        fail_stale_trials(study)  # lost workers' trials: failed and queued again
        states = [t.state for t in study.get_trials(deepcopy=False)]
        finished = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
        if finished >= trials:
            return "done"
        if states.count(TrialState.FAIL) > max(3, trials):
            raise RunsFailed(f"{states.count(TrialState.FAIL)} trials failed; see {Folder(folder).logs} for why, fix it, "
                             "and run the same command again.")
        waiting = states.count(TrialState.WAITING)
        if not waiting and finished + states.count(TrialState.RUNNING) >= trials:
            return None
        if not study.user_attrs.get("clsf_enqueued"):  # the space's first points, once per study
            for point in plan["enqueue"]:
                study.enqueue_trial(point, skip_if_exists=True)
            study.set_user_attr("clsf_enqueued", True)
        return study.ask(distributions(plan["space"]))


def _heartbeat(storage, trial_id: int, stop: threading.Event) -> None:
    """One beat at once (a trial without any counts as alive forever), then every HEARTBEAT_S."""
    with contextlib.suppress(Exception):
        storage.record_heartbeat(trial_id)
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(Exception):  # a missed beat is retried at the next; GRACE_S allows two
            storage.record_heartbeat(trial_id)


def _objective_value(run: Path, key: str) -> tuple[float | None, str | None]:
    """The run's last epoch's objective, and how it stopped ("pruned", "early" or None)."""
    r = RunDir(run)
    rows, final = r.metrics(), r.final() or {}
    value = rows[-1].get(key) if rows else None
    return (None if value in (None, "") else float(value)), final.get("stopped")


def run_trial(storage, study, trial, folder: Path, plan: dict, make_config, storage_url: str, study_name: str,
              threads: dict) -> str:
    """Train one trial as an ordinary run in a child process and tell the study how it ended."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    name, tid = run_name(storage, study, trial), trial_id(storage, study, trial)
    trial.set_user_attr("run", name)
    cfg = trial_config(make_config, trial.params, plan["seed"], plan["space"])
    cfg.runs_dir, cfg.run_name = str(Folder(folder).runs), name
    Folder(folder).configs.mkdir(exist_ok=True)
    write_trial(Folder(folder).trial(name), storage_url, study_name, tid, plan["objective"], plan["pruner"])
    env = {**threads, **({STORAGE_ENV: storage_url} if shown_url(storage_url) != storage_url else {})}  # (a password)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(storage, tid, stop), daemon=True)
    beat.start()
    shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    t0 = time.perf_counter()
    try:
        try:
            runner.wait_unlocked(Folder(folder).run(name))
            outcome = runner.train_run(folder, name, cfg, f"[trial {trial.number}] {shown} |", env,
                                       ("--trial", str(Folder(folder).trial(name))))
        except KeyboardInterrupt:  # stopped with a checkpoint: queued again, so the next command resumes it
            study.tell(trial, state=TrialState.FAIL)
            RetryHeartbeatStaleTrialCallback(MAX_RETRY, inherit_intermediate_values=True)(
                study, storage.get_trial(tid))
            raise
        except UserError:
            study.tell(trial, state=TrialState.FAIL)
            raise
    finally:
        stop.set()
    result, value = _told(study, trial, Folder(folder).run(name), plan["objective"], outcome)
    said = f", {plan['objective']} {value:.4f}" if value is not None else ""
    print(f"[trial {trial.number}] {shown}: {result}{said} in {clock(time.perf_counter() - t0)}", flush=True)
    return result


def _told(study, trial, run: Path, objective: str, outcome: str) -> tuple[str, float | None]:
    """The study told how the trial's run ended: complete with its objective, pruned, or failed."""
    from optuna.trial import TrialState

    if outcome != "finished":
        study.tell(trial, state=TrialState.FAIL)
        return "failed", None
    value, stopped = _objective_value(run, objective)
    if stopped == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned", value
    if value is None:
        study.tell(trial, state=TrialState.FAIL)
        return "failed", None
    study.tell(trial, value)
    return "complete", value


def work(folder: Path, plan: dict, make_config, trials: int, storage_url: str, study_name: str,
         threads: dict | None = None, deadline: float | None = None, worker: int = 0) -> list[str]:
    """One worker (`worker`: its index in the command): trials until the study holds `trials` finished
    ones, or until `deadline` (time.monotonic()) has passed — then no new trial starts (`threads`: the
    environment that sets each trial's thread count); the names of failed runs."""
    storage = worker_storage(storage_url, heartbeat=True)
    study = load_study(plan, storage_url, study_name, heartbeat=True, worker=worker, storage=storage)
    failed = []
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            print("tune: the time budget (--minutes) is spent; no new trial starts", flush=True)
            return failed
        trial = _next_trial(study, folder, plan, trials, storage_url)
        if trial == "done":
            return failed
        if trial is None:  # the last trials are running elsewhere: wait for them, or for them to be lost
            time.sleep(min(HEARTBEAT_S, 5))
            continue
        outcome = run_trial(storage, study, trial, folder, plan, make_config, storage_url, study_name, threads or {})
        if outcome == "failed":
            failed.append(f"trial {trial.number}")


def _start_workers(n: int, argv: list[str]) -> list[subprocess.Popen]:
    """n more workers: this command again in its own process group (Ctrl-C is passed on by us, once),
    told to train only (--worker-of: this process's id and the worker's index); each stops with a
    checkpoint if this process dies (runner.die_with_parent)."""
    env = {**os.environ, **thread_env(threads_each(n + 1)), "PYTHONUNBUFFERED": "1"}
    return [subprocess.Popen([sys.executable, "-m", "clsf", *argv, WORKER_FLAG, f"{os.getpid()}:{i}"], env=env,
                             start_new_session=True, preexec_fn=functools.partial(runner._die_with_parent, os.getpid()))
            for i in range(1, n + 1)]


def _worker_role(worker_of: str | None) -> tuple[int | None, int]:
    """(the command's process id, this worker's index) in an extra worker (--worker-of PID:I); (None, 0)
    in the command."""
    parent, _, index = (worker_of or "").partition(":")
    if worker_of is not None and not (parent.isdigit() and index.isdigit()):
        raise UserError(f"{WORKER_FLAG} {worker_of} must be PID:INDEX (clsf tune gives it to the workers it starts).")
    return (int(parent), int(index)) if worker_of is not None else (None, 0)


def tune(cfg, space_file: str | Path, trials: int | None = None, workers: int = 1, out: str | Path | None = None,
         storage: str | None = None, study_name: str | None = None, argv: list[str] | None = None,
         minutes: float | None = None, executor=None, worker_of: str | None = None) -> Path:
    """Run (or continue) a study until it holds `trials` finished trials, or until `minutes` have
    passed (no trial starts after that; running ones finish); write its report; return the folder.
    `cfg`: the Config every trial starts from, or a function recipe name (or None) -> Config when
    the space searches `recipe`. `argv`: the command line the extra workers run. `executor`: all
    `workers` as tasks on a cluster (clsf.experiments.cluster), this process only reporting.
    `worker_of`: "PID:I" in an extra worker the command PID started (it trains, and stops when PID dies)."""
    deadline = None if minutes is None else time.monotonic() + 60 * minutes
    require_optuna()
    settings = read_space(space_file)
    make_config = cfg if callable(cfg) else functools.partial(_one_config, cfg)
    trials = trials if trials is not None else settings["trials"]
    if not 1 <= trials <= MAX_TRIALS or workers < 1 or (minutes is not None and not 0 < minutes < float("inf")):
        raise UserError(f"--trials {trials} must be in [1, {MAX_TRIALS:,}], --workers {workers} at least 1, and "
                        f"--minutes {minutes} a number of minutes > 0.")
    parent, worker = _worker_role(worker_of)
    worker_only = parent is not None
    executor = None if worker_only else executor  # a worker trains where it was placed (--workers counts them all)
    if executor is None and not worker_only:
        check_cores(workers, "--workers")
    base = make_config(None)
    plan = plan_tune(make_config, settings, base.seed)
    folder = Path(out) if out else runner.default_folder(base, "tune", plan)
    storage_url = storage or os.environ.get(STORAGE_ENV) or default_storage(folder)
    study_name = study_name or folder.name
    plan.update(storage=None if storage_url == default_storage(folder) else shown_url(storage_url), study=study_name)
    if worker_only:  # the command that started this worker may die (kill -9): then stop with a checkpoint
        runner.watch_parent(parent)
    if executor is not None:
        executor.connect()  # a cluster that cannot run them: said before the folder is made
    if storage_url != default_storage(folder):  # a wrong URL or another search: refused before the folder is made
        load_study(plan, storage_url, study_name, heartbeat=False)
    with runner.open_folder(folder, plan, shared=True):
        load_study(plan, storage_url, study_name, heartbeat=False)
        if not worker_only:
            print(f"tune folder {folder}: study '{study_name}' in {shown_url(storage_url)}, {trials} trials, "
                  f"{workers} worker(s), objective {plan['objective']} ({plan['direction']}); run the same command "
                  "again to continue it")
        if (workers > 1 or executor is not None) and not worker_only and argv is None:
            argv = _worker_argv(folder, make_config, settings, space_file, trials, storage, study_name, deadline)
        if executor is not None:
            return _tune_elsewhere(executor, folder, argv, workers, storage_url)
        extra = _start_workers(workers - 1, argv) if workers > 1 and not worker_only else []
        try:
            threads = thread_env(threads_each(workers)) if workers > 1 and not worker_only else {}  # (extra workers have theirs)
            failed = work(folder, plan, make_config, trials, storage_url, study_name, threads, deadline, worker)
            for w in extra:
                w.wait()
        except KeyboardInterrupt as e:
            e.reported = True  # said below
            for w in extra:  # their own process groups: the terminal's Ctrl-C reached only ours
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.pid, signal.SIGINT)
            for w in extra:
                w.wait()
            print("\nclsf: tune stopped; run the same command again to continue the study (an interrupted trial "
                  "resumes from its checkpoint).", file=sys.stderr)
            raise
        if worker_only:
            return folder
        lost = [w for w in extra if w.returncode not in (0, None)]
        summary = runner.finish(folder, storage=storage_url)
    _print_best(summary)
    if lost:
        print(f"clsf: warning: {len(lost)} worker(s) stopped early (exit {', '.join(str(w.returncode) for w in lost)}); "
              "their messages are above.", file=sys.stderr)
    runner.raise_failed(folder, "tune", failed)
    return folder


def _tune_elsewhere(executor, folder: Path, argv: list[str], workers: int, storage_url: str) -> Path:
    """Every worker a task on the cluster; this process waits, passes their trial lines on, and
    writes the report once they have found the study full."""
    try:
        lost = executor.tune_workers(folder, argv, workers)
    except KeyboardInterrupt as e:
        e.reported = True
        print("\nclsf: tune stopped; run the same command again to continue the study (an interrupted trial "
              "resumes from its checkpoint).", file=sys.stderr)
        raise
    summary = runner.finish(folder, storage=storage_url)
    _print_best(summary)
    for line in lost:
        print(f"clsf: warning: {line}", file=sys.stderr)
    return folder


def _one_config(cfg: Config, recipe: str | None) -> Config:
    if recipe is not None:
        raise UserError("searching 'recipe' needs the layers under it: call tune() with a function recipe -> Config "
                        "(as clsf tune does), or search the keys themselves.")
    return cfg


def _worker_argv(folder: Path, make_config, settings: dict, space_file, trials: int, storage: str | None,
                 study_name: str | None, deadline: float | None) -> list[str]:
    """The command line extra workers run when tune() was called from Python: the base config as a file."""
    if "recipe" in settings["space"]:
        raise UserError("several workers searching 'recipe' from Python need the command line: use clsf tune.")
    Folder(folder).configs.mkdir(exist_ok=True)
    base = Folder(folder).config("tune-base")
    files.write_text(base, make_config(None).to_yaml())
    argv = ["tune", "--config", str(base), "--space", str(space_file), "--trials", str(trials), "--out", str(folder)]
    argv += ["--minutes", str((deadline - time.monotonic()) / 60)] if deadline is not None else []
    return argv + (["--storage", storage] if storage else []) + (["--study", study_name] if study_name else [])


def _print_best(summary: dict) -> None:
    counts = summary["counts"]
    print(f"trials: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned "
          f"({count(summary['epochs_saved'], 'epoch')} saved), {counts.get('FAIL', 0)} failed")
    for t in summary["best"][:5]:
        params = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        print(f"  trial {t['number']:>3}  {summary['objective']} {t['value']:.4f}  {params}  -> {t['run']}")

