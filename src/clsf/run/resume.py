"""What `clsf train --resume RUN` may change, said explicitly.

A resumed run continues the same experiment: the model, data, engine, batch size, optimizer and
schedule it trained with are fixed, and asking to change one is refused with a line naming the
flag. What can change is applied and recorded (config.yaml, and a `resumes` entry in env.json):
the keys in CHANGEABLE — `epochs` (to extend the run), `device`, `eval_batch_size`,
`early_stop_patience`, the mid-epoch checkpoint intervals and `dist_timeout_s` — and, at an
epoch's end, the number of replicas.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

from clsf.config import Config, apply, flag_of, flatten, nest, validate
from clsf.engines.schedule import lr_at
from clsf.errors import UserError
from clsf.run.rundir import RunDir
from clsf.run.state import RunState
from clsf.words import count

CHANGEABLE = ("epochs", "device", "eval_batch_size", "early_stop_patience", "save_every_steps", "save_every_minutes",
              "dist_timeout_s", "track", "track_uri", "track_experiment")


def _get(cfg: Config, key: str):
    node = cfg.to_dict()
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def resume_config(run: str | Path, changes: dict) -> tuple[RunDir, Config, dict, RunState]:
    """The run, its config with the allowed `changes` applied, {key: [old, new]} of what changed, and
    the state of checkpoints/last. A run stopped early stays stopped unless `epochs` changes."""
    run = RunDir.open(run, "last")
    kind = run.kind()
    if not kind.classifies:
        raise UserError(f"{run} is a {kind.name} run, not a classifier's; resume it with clsf {kind.command} --resume {run}.")
    cfg, meta = run.validate("last"), run.meta("last")
    run.check_writable()
    changed = {}
    for key, value in flatten(changes).items():
        old = _get(cfg, key)
        new = _get(apply(copy.deepcopy(cfg), nest(key, value)), key)  # type-checked like any override
        if new == old:
            continue  # restating the run's own value is no change
        if key not in CHANGEABLE:
            flag = flag_of(key)
            raise UserError(f"{flag} cannot change when resuming (this run trained with {key}={old!r}); "
                            f"resume without it, or start a new run to try {new!r}.")
        changed[key] = [old, new]
        apply(cfg, nest(key, new))
    validate(cfg)
    if cfg.epochs < meta["epoch"]:
        raise UserError(f"--epochs {cfg.epochs} is fewer than the {count(meta['epoch'], 'epoch')} this run has trained; "
                        f"give at least {meta['epoch']}.")
    if "epochs" in changed:  # a warning where the schedule's curve moves, shown even with --quiet
        _warn_reshaped_schedule(cfg, changed["epochs"][0], meta)
    state = RunState.from_meta(meta, run.metrics())
    if state.stopped_early:
        if "epochs" in changed:
            state.stopped_early, state.stopped = False, None  # asked to train further
        else:
            state.request_stop(state.stopped or "early")  # finished: only what the finish did not write is left
    return run, cfg, changed, state


def fingerprints(cfg: Config, spec) -> dict:
    """Hashes of what defines the experiment: the config without the keys a resume may change, and
    the network. A checkpoint keeps them; a resume that finds either changed on disk refuses."""
    from clsf.models.yaml_spec import model_digest

    fixed = {k: v for k, v in flatten(cfg.to_dict()).items() if k not in CHANGEABLE}
    return {"config": hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:16],
            "model": model_digest(spec)}


def check_fingerprints(run: RunDir, state: RunState, now: dict) -> None:
    for what, name in (("config", RunDir.CONFIG), ("model", RunDir.MODEL)):
        if state.fingerprints.get(what) not in (None, now[what]):
            raise UserError(f"{run.path / name} changed since checkpoints/last was written, so resuming would train "
                            f"another experiment; restore it (or start a new run with the new settings).")


def _warn_reshaped_schedule(cfg: Config, old_epochs: int, meta: dict) -> None:
    """Say so where the new epoch count moves the learning rates still to come (cosine, linear,
    one-cycle, an unfreeze's second phase: lr_at decides, not a list of names)."""
    step, inside, done = meta["global_step"], meta.get("step", 0), meta["epoch"]
    spe = max(1, round((step - inside) / done)) if done else None  # steps per epoch as trained; inside epoch 1: unknown
    probe = spe or step + 1  # whether the curve moves does not hang on the exact count
    rate = lambda s, epochs: lr_at(s, probe, epochs, cfg.optim, cfg.unfreeze_after)  # noqa: E731
    end = max(old_epochs, cfg.epochs) * probe  # past its own end the old curve holds its last rate
    if all(rate(s, old_epochs) == rate(s, cfg.epochs) for s in range(step, end, max(1, (end - step) // 64))):
        return  # constant, step: the epoch count does not shape them
    o, after = cfg.optim, cfg.unfreeze_after
    two = o.unfreeze_lr is not None and bool(after)  # two phases (lr_at): only the second spans the epochs that change
    if two:
        spans, floor = f"spans the epochs after unfreeze_after={after}", min(o.min_lr, o.unfreeze_lr / 10)
    else:
        spans, floor = "spans the run's total epochs", o.min_lr
    if two and done < after:  # still in the first phase: its rates stay
        where = f"from the unfreeze at epoch {after + 1} (optim.unfreeze_lr={o.unfreeze_lr:g}) falls"
    elif spe:
        where = (f"goes from {rate(step - 1, old_epochs):.3g} (last step trained) to {rate(step, cfg.epochs):.3g} at "
                 f"epoch {done + 1} and then falls")
    else:
        where = f"is recomputed from step {step} of epoch 1 and falls"
    change = "extending" if cfg.epochs > old_epochs else "shortening"
    print(f"clsf: warning: optim.schedule={o.schedule} {spans}, so {change} it from {old_epochs} to {cfg.epochs} "
          f"recomputes the curve: the learning rate {where} to {floor:g} by epoch {cfg.epochs}.", file=sys.stderr)
