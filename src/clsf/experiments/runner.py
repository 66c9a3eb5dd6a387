"""What compare and sweep share: a folder, a plan, and one `clsf train` process per run.

  <folder>/
    plan.json        what was asked (engines or grid, seeds, the base config) and the runs it implies
    configs/NAME.yaml  the config each run starts from
    runs/NAME/       ordinary run directories (clsf train / evaluate / report work on them as usual)
    logs/NAME.log    each run's output, stderr included
    logs/NAME.json   how its process ended (exit status, error line), which is what the command reads
    report.html, report.md, report_files/, summary.json
    .lock            held (flock) by the command working in the folder

Every run trains in its own process (TensorFlow and torch never share one), one at a time so their
timings are not disturbed by each other. Running the same command again continues: a finished run is
skipped, an interrupted one resumes from its last checkpoint, a missing one starts. A lock on the
folder keeps two commands from working in it at once.
"""

from __future__ import annotations

import copy
import fcntl
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from clsf.config import Config, flatten
from clsf.errors import RunsFailed, UserError
from clsf.run import checkpoints, files
from clsf.run.rundir import RunDir
from clsf.run.folder import Folder


def plan_id(plan: dict) -> str:
    """A short hash of what was asked (not of the runs it implies, which follow from it)."""
    asked = {k: v for k, v in plan.items() if k not in ("runs", "storage", "study")}  # where it is kept is not what
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:8]


def base_config(cfg: Config) -> dict:
    """The recipe every run shares: the config without what each run sets itself."""
    d = cfg.to_dict()
    for k in ("engine", "seed", "run_name", "runs_dir", "init_from"):
        d.pop(k)
    return d


def default_folder(cfg: Config, kind: str, plan: dict) -> Path:
    return Path(cfg.runs_dir) / f"{kind}-{files.slug(cfg.model.name)}-{files.data_slug(str(cfg.data.name))}-{plan_id(plan)}"


def _read_plan(path: Path, folder: Path) -> dict:
    try:
        old = files.read_json(path)
        if not isinstance(old, dict):
            raise ValueError("not a mapping")
        return old
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}); remove {folder} to start it again, or "
                        "choose another --out.") from None


@contextmanager
def open_folder(folder: Path, plan: dict, shared: bool = False):
    """Hold the folder (a lock released by the OS if this process dies) with plan.json written, or
    checked to be the same plan when the folder is continued. `shared`: tune's workers, several at
    once (each trial's run has its own lock); compare and sweep hold it alone."""
    f = Folder(folder)
    if folder.exists() and not f.plan.is_file() and any(p != f.lock for p in folder.iterdir()):
        raise UserError(f"{folder} exists and is not a clsf compare, sweep or tune folder (no {f.plan.name}); choose another --out.")
    if f.plan.is_file():
        _read_plan(f.plan, folder)  # a damaged plan is refused before anything is written
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {folder} ({e.strerror}); choose another --out.") from None
    with open(f.lock, "w") as lock:
        try:
            fcntl.flock(lock, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another clsf command is working in {folder}; wait for it to finish, or choose another --out.") from None
        path = f.plan
        if path.is_file():
            old = _read_plan(path, folder)
            if plan_id(old) != plan_id(plan):
                a, b = flatten({k: v for k, v in old.items() if k != "runs"}), flatten({k: v for k, v in plan.items() if k != "runs"})
                diff = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
                raise UserError(f"{folder} holds a {old.get('kind', 'folder')} with another plan ({'; '.join(diff[:4])}); "
                                f"rerun with its arguments to continue it, or choose another --out.")
        else:
            files.write_json(path, plan)
        yield


def state(run: Path) -> str:
    """'finished', 'resume' (it has a finished epoch) or 'fresh' (nothing worth keeping)."""
    r = RunDir(run)
    if run.is_dir() and r.is_locked():
        raise UserError(f"{run} is being trained by another process (a child of an earlier {run.parent.parent.name} "
                        "command?); wait for it or stop it, then run the same command again.")
    if r.final() is not None:
        return "finished"
    if run.is_dir() and r.has_checkpoint("last"):  # (a checkpoint swap a kill cut short is finished first)
        return "resume"
    return "fresh"


def wait_unlocked(run: Path, seconds: float = 120) -> None:
    """A lost worker's child may still be writing its checkpoint (it got SIGINT): wait for its lock."""
    deadline = time.monotonic() + seconds
    while run.is_dir() and RunDir(run).is_locked() and time.monotonic() < deadline:
        time.sleep(0.5)


def _die_with_parent(parent: int) -> None:
    """In the child, before it runs: Linux sends it SIGINT when `parent` dies (even by kill -9), so
    it stops at its next step with a checkpoint instead of training on as an orphan. SIGINT goes back
    to its default first: a process started with SIGINT ignored (inherited: a test runner's, a shell's
    background job) keeps it ignored, and Python would then install no KeyboardInterrupt for it."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.signal(signal.SIGINT, 0)  # SIG_DFL, set through libc: safe in the forked child, any thread
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT)
        if os.getppid() != parent:  # the parent died before the line above: nobody would send it
            os._exit(130)


def watch_parent(parent: int, every_s: float = 0.5) -> None:
    """In a process another clsf process started: once `parent` is gone (this process re-parented,
    which PR_SET_PDEATHSIG alone can miss), interrupt this process as Ctrl-C would, so it stops its
    trial with a checkpoint and exits. A daemon thread polls; the main thread gets a real SIGINT (which
    also ends a blocking read of a child's output), with Python's handler put back in case SIGINT was
    inherited ignored."""
    import threading

    signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch():
        while os.getppid() == parent:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="clsf-watch-parent", daemon=True).start()


ECHO: list[bool | None] = [None]  # a run's own lines: None = when stdout is a terminal; False = never (--quiet)


def echo_children() -> bool:
    """Whether each run's epoch lines stream through (a terminal), or only one line per run does (a
    log, a pipe, CI, --quiet): the runs' own lines are in the folder's logs/ either way."""
    return sys.stdout.isatty() if ECHO[0] is None else ECHO[0]


def outcome_line(run: Path, outcome: str, seconds: float) -> str:
    """'finished, test_acc 0.7512 in 1:05' (or 'failed in 0:12'): what a run ended with."""
    from clsf.run.progress import clock

    final = RunDir(run).final() if outcome == "finished" and (run / RunDir.FINAL).is_file() else None
    result = f", test_acc {final['test_acc']:.4f}" if final and "test_acc" in final else ""
    return f"{outcome}{result} in {clock(seconds)}"


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter stays in the log
    env["PYTHONUNBUFFERED"] = "1"  # epoch lines arrive as they happen
    return env


def train_run(folder: Path, name: str, cfg: Config, progress: str, env: dict | None = None,
              args: tuple[str, ...] = ()) -> str:
    """Train (or resume, or skip) one run in its own process (`env`: added to its environment, `args`:
    to its command line, e.g. a tune trial's --trial FILE); return its state afterwards. The process
    says how it ended in the folder's logs/NAME.json (--outcome), read here.

    Raises UserError when the run rejected its input (every other run would too), and
    KeyboardInterrupt after the child has stopped on Ctrl-C."""
    run = Folder(folder).run(name)
    was, echo = state(run), echo_children()
    if was == "finished":
        print(f"{progress} {name}: finished earlier, skipped")
        return "finished"
    if was == "fresh" and cfg.init_from and not checkpoints.has_weights(cfg.init_from):
        print(f"{progress} {name}: not started — its initial weights ({cfg.init_from}) were never written, "
              f"because the run that makes them failed", file=sys.stderr)
        return "failed"
    if was == "resume":
        argv = ["train", "--resume", str(run)]
        print(f"{progress} {name}: resuming after {RunDir(run).reached('last')}", flush=True)
    else:
        shutil.rmtree(run, ignore_errors=True)  # died before its first epoch: nothing to keep
        Folder(folder).configs.mkdir(exist_ok=True)
        config = Folder(folder).config(name)
        if cfg.track and not cfg.track_experiment:  # the folder's runs: one MLflow experiment named after it
            cfg = copy.deepcopy(cfg)
            cfg.track_experiment = folder.name
        files.write_text(config, cfg.to_yaml())
        argv = ["train", "--config", str(config)]
        if echo:
            print(f"{progress} {name}: training", flush=True)
    Folder(folder).logs.mkdir(exist_ok=True)
    outcome = Folder(folder).outcome(name)
    outcome.unlink(missing_ok=True)  # an earlier attempt's
    argv += [*args, "--outcome", str(outcome)]
    with open(Folder(folder).log(name), "a", buffering=1) as log:  # line by line: `tail -f` follows it
        log.write(f"$ clsf {' '.join(argv)}\n")
        log.flush()
        parent = os.getppid()
        child = subprocess.Popen([sys.executable, "-m", "clsf", *argv], stdout=subprocess.PIPE, stderr=log,
                                 text=True, env={**_child_env(), **(env or {})},
                                 preexec_fn=functools.partial(_die_with_parent, os.getpid()))
        try:
            for line in child.stdout:  # the child's epoch lines, kept in the log (and on a terminal shown as they come)
                if echo:
                    print(f"  [{name}] {line}", end="", flush=True)
                log.write(line)
        except KeyboardInterrupt:
            if os.getppid() != parent:  # not Ctrl-C but our own parent's death (_die_with_parent): pass it on
                child.send_signal(signal.SIGINT)
            child.wait()  # Ctrl-C reached the child too: it stops at a step with a checkpoint and exits
            raise
        rc = child.wait()
    if rc == 130:
        raise KeyboardInterrupt
    if rc != 0:
        said = _said(outcome)
        reason = said or f"exit status {rc}; see {Folder(folder).log(name)}"
        if rc == UserError.exit_code:
            raise UserError(f"run {name} refused its input: {reason}")
        print(f"  [{name}] failed: {reason}", file=sys.stderr)
        return "failed"
    return state(run)


def _said(outcome: Path) -> str | None:
    """The error line a run's process left in its --outcome file; None if it left none (killed)."""
    with suppress(OSError, ValueError, AttributeError):
        return json.loads(outcome.read_text()).get("error")
    return None


def train_all(folder: Path, jobs: list[tuple[str, Config]], kind: str, executor=None) -> list[str]:
    """Train every job in order (`executor`: elsewhere, e.g. on a Ray cluster, `clsf.experiments.cluster`);
    return the names of runs that failed (others go on)."""
    from clsf.run.progress import RunsClock

    if executor is not None:
        return executor.train_all(folder, jobs, kind)

    failed, clock = [], RunsClock(len(jobs))
    try:
        for i, (name, cfg) in enumerate(jobs):
            before, t0 = state(Folder(folder).run(name)), time.perf_counter()
            outcome = train_run(folder, name, cfg, f"[{i + 1}/{len(jobs)}]")
            if outcome == "failed":
                failed.append(name)
            seconds = time.perf_counter() - t0
            clock.done(seconds, trained=before != "finished")
            if before != "finished":  # one line per run, whatever else is shown
                print(f"[{i + 1}/{len(jobs)}] {name}: {outcome_line(Folder(folder).run(name), outcome, seconds)}; "
                      f"{clock.line(len(jobs) - i - 1)}", flush=True)
    except KeyboardInterrupt as e:
        done = sum(state(Folder(folder).run(n)) == "finished" for n, _ in jobs)
        print(f"\nclsf: {kind} stopped with {done} of {len(jobs)} runs finished; run the same command again "
              f"to finish the rest (finished runs are skipped, the interrupted one resumes).", file=sys.stderr)
        e.reported = True
        raise
    return failed


def finish(folder: Path, storage: str | None = None) -> dict:
    """Write the folder's report and summary.json; return the summary (`storage`: a tune study's)."""
    from clsf.report.build import experiment_page

    page, summary = experiment_page(folder, storage)
    files.write_json(Folder(folder).summary, summary)
    print(f"report: {page.write(folder)}")
    return summary


def raise_failed(folder: Path, kind: str, failed: list[str]) -> None:
    if failed:
        raise RunsFailed(f"{len(failed)} {kind} run(s) failed ({', '.join(failed)}); the report covers the rest — "
                         f"see {Folder(folder).logs} for why, fix it, and run the same command again.")
