"""Checkpoints inside an epoch: every `save_every_steps` steps, every `save_every_minutes` minutes,
and on Ctrl-C, always at a step boundary (after an optimizer update, never half-way through one).

A mid-epoch checkpoint is an ordinary checkpoints/last whose meta.json also holds `step` (batches
of the epoch done) and the epoch's running sums (`meter`). The data order is a function of
(seed, epoch), so a resume continues the epoch at batch `step`: no sample skipped or repeated. The
weights, optimizer state, global step and the dropout generator's state come from the checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from clsf.run import rundir


class StopAfterSteps(Exception):
    """`train(stop_after_steps=N)` reached step N: a mid-epoch checkpoint was written, as Ctrl-C would."""


class MidEpoch:
    def __init__(self, run, engine, cfg, stop_after_steps: int | None = None, replicas: int = 1):
        # run None: a process of a multi-process run other than the lead, which writes nothing
        self.run, self.engine, self.cfg, self.stop_after_steps = run, engine, cfg, stop_after_steps
        self.replicas = replicas
        self.interrupted = False
        self.last_save = time.monotonic()
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _on_sigint(self, signum, frame):
        if self.interrupted:  # a second Ctrl-C: stop at once (the last checkpoint stands)
            raise KeyboardInterrupt
        self.interrupted = True
        print("\nclsf: stopping after this step, with a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def begin_epoch(self, epoch: int, meter, rows: list, best: dict, started: float, carried_seconds: float) -> None:
        self.epoch, self.meter, self.rows, self.best = epoch, meter, rows, best
        self.started, self.carried = started, carried_seconds

    def after_step(self, step: int) -> None:
        """Called by the Meter after every optimizer step of the epoch (`step` counts from 0)."""
        if step + 1 == self.meter.n_steps:
            return  # the epoch's own checkpoint follows at once
        c, gs = self.cfg, self.engine.global_step()
        stop = self.interrupted or (self.stop_after_steps is not None and gs >= self.stop_after_steps)
        due = stop or bool(c.save_every_steps and gs % c.save_every_steps == 0) or bool(
            c.save_every_minutes and time.monotonic() - self.last_save >= 60 * c.save_every_minutes)
        if due and self.run is not None:
            seconds = self.carried + time.perf_counter() - self.started
            meta = {"epoch": self.epoch, "step": step + 1, "global_step": gs, "best": self.best, "stopped_early": False,
                    "metrics": self.rows[-1] if self.rows else None, "rows": self.rows,
                    "meter": {**self.meter.state(), "seconds": seconds}, "replicas": self.replicas}
            rundir.save_checkpoint(self.engine, self.run, "last", meta)
        if due:
            self.last_save = time.monotonic()
        if self.interrupted:
            raise KeyboardInterrupt
        if stop:
            raise StopAfterSteps
