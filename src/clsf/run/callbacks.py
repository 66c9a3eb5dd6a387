"""Everything the loop does besides training and validating, as callbacks (Keras' idea): each one
reads the RunState and may ask the loop to stop through it (`state.request_stop`), never by raising
from inside an engine.

Order matters where one callback reads what another decides: `EarlyStop` marks the state before
`Checkpoints` saves it, and `Checkpoints` writes before `Logs`, so a kill between the two loses log
lines the resume rewrites from the checkpoint, never a checkpoint the logs already claim. Processes
of a multi-process run other than the lead get no writers (Checkpoints, Logs, Progress).
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from clsf.engines.base import Meter
from clsf.run.rundir import RunDir
from clsf.run.state import RunState
from clsf.words import count


class Callback:
    def on_train_start(self, state: RunState) -> None: ...

    def on_epoch_start(self, state: RunState) -> None: ...

    def on_step(self, state: RunState, meter: Meter, step: int) -> None: ...  # after every optimizer step

    def on_epoch_end(self, state: RunState, row: dict, improved: bool) -> None: ...

    def on_train_end(self, state: RunState) -> None: ...  # always, also when an error ends the loop

    def on_finish(self, final: dict) -> None: ...  # the finished run's final.json, once it is written (the lead)


class Plugin:
    """What a layer above run/ plugs into a run (clsf.integrations: MLflow, a tune trial's pruner):
    `check` before anything is written, then `make` in every process, giving a callback or None
    (`run` is None in processes that write nothing). `keys`: the config keys it serves, so a run
    whose config asks for one that no plugin serves is refused instead of silently ignored.
    `decides`: its callback may stop the run, so it comes before the checkpoint is written (else
    after the run directory's own logs)."""

    keys: tuple[str, ...] = ()
    decides: bool = False

    def check(self, cfg) -> None: ...

    def make(self, cfg, run: RunDir | None, quiet: bool) -> Callback | None:
        raise NotImplementedError


class Callbacks(Callback):
    """Calls each callback in order."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks, self.started = callbacks, []

    def on_train_start(self, state):
        self.started = []  # on_train_end ends these alone: a start that failed leaves the rest unstarted
        for c in self.callbacks:
            c.on_train_start(state)
            self.started.append(c)

    def on_epoch_start(self, state):
        for c in self.callbacks:
            c.on_epoch_start(state)

    def on_step(self, state, meter, step):
        for c in self.callbacks:
            c.on_step(state, meter, step)

    def on_epoch_end(self, state, row, improved):
        for c in self.callbacks:
            c.on_epoch_end(state, row, improved)

    def on_train_end(self, state):
        for c in reversed(self.started):
            c.on_train_end(state)

    def on_finish(self, final):
        for c in self.callbacks:
            c.on_finish(final)


def restore_sigint(previous) -> None:
    """Put back the SIGINT handler that signal.signal answered with; None (a handler set outside Python,
    which Python cannot reinstall) puts back Python's own, so Ctrl-C still interrupts."""
    signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


class Interrupt(Callback):
    """Ctrl-C: a stop at the next step boundary, with a checkpoint; a second Ctrl-C stops at once
    (the last checkpoint stands). Signals reach the main thread only, so elsewhere this does nothing."""

    def __init__(self):
        self.installed, self.previous, self.state = False, None, None

    def on_train_start(self, state):
        self.state = state
        if threading.current_thread() is threading.main_thread():
            self.previous, self.installed = signal.signal(signal.SIGINT, self._on_sigint), True

    def on_train_end(self, state):
        if self.installed:
            restore_sigint(self.previous)
            self.installed, self.previous = False, None

    def _on_sigint(self, signum, frame):
        if self.state.stop == "interrupt":
            raise KeyboardInterrupt
        self.state.request_stop("interrupt")
        print("\nclsf: stopping after this step, with a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)


class PauseAfter(Callback):
    """train(stop_after=epochs, stop_after_steps=steps): end this call early, leaving a run that a
    resume completes, as an interruption would (the steps with a mid-epoch checkpoint)."""

    def __init__(self, engine, epochs: int | None = None, steps: int | None = None):
        self.engine, self.epochs, self.steps = engine, epochs, steps

    def on_step(self, state, meter, step):
        # at an epoch's last step the epoch finishes first; the pause comes at the next epoch's first
        if self.steps is not None and state.global_step >= self.steps and step + 1 < meter.n_steps:
            state.request_stop("pause")

    def on_epoch_end(self, state, row, improved):
        if self.epochs is not None and self.epochs <= state.epoch < state.epochs:
            state.request_stop("pause")


class EarlyStop(Callback):
    """Stop when the monitored loss has not improved for `patience` epochs (0: never)."""

    def __init__(self, patience: int, quiet: bool):
        self.patience, self.quiet = patience, quiet

    def on_epoch_end(self, state, row, improved):
        if self.patience and state.best["bad_epochs"] >= self.patience:
            state.stopped_early, state.stopped = True, "early"
            state.request_stop("early")
            if not self.quiet:
                b = state.best
                print(f"early stop: val_loss has not improved for {count(b['bad_epochs'], 'epoch')} "
                      f"(best {b['val_loss']:.4f} at epoch {b['epoch']})")


class Unfreeze(Callback):
    """freeze=trunk with unfreeze_after=N: the head trains alone for N epochs, then every layer."""

    def __init__(self, engine, after: int | None, checks, quiet: bool):
        self.engine, self.after, self.checks, self.quiet = engine, after, checks, quiet
        self.done = False

    def on_epoch_start(self, state):
        if self.after is None or self.done or state.epoch < self.after:
            return
        self.engine.unfreeze()
        self.checks.expect_retrace()  # the step is traced once more, on purpose
        self.done = True
        if not self.quiet:
            print(f"epoch {state.epoch + 1}: the trunk is unfrozen; every layer trains from here")


class Checkpoints(Callback):
    """checkpoints/last at every epoch's end (copied to best when the monitored loss improved), and
    inside an epoch every `save_every_steps` steps, every `save_every_minutes` minutes, and when the
    loop is asked to stop there — always at a step boundary. The data order is a function of (seed,
    epoch), so a resume continues the epoch at batch `step`: no image skipped or repeated."""

    def __init__(self, run: RunDir, engine, every_steps: int | None, every_minutes: float | None):
        self.run, self.engine, self.every_steps, self.every_minutes = run, engine, every_steps, every_minutes
        self.last_save = time.monotonic()

    def on_step(self, state, meter, step):
        if step + 1 == meter.n_steps:
            return  # the epoch's own checkpoint follows at once
        gs = state.global_step
        due = state.stop is not None or bool(self.every_steps and gs % self.every_steps == 0) or bool(
            self.every_minutes and time.monotonic() - self.last_save >= 60 * self.every_minutes)
        if due:
            self.run.save_checkpoint(self.engine, "last", state.to_meta())
            self.last_save = time.monotonic()

    def on_epoch_end(self, state, row, improved):
        self.run.save_checkpoint(self.engine, "last", state.to_meta())
        if improved:
            self.run.copy_checkpoint("last", "best")
        self.last_save = time.monotonic()


class Logs(Callback):
    """metrics.csv (rewritten whole each epoch) and TensorBoard scalars. A resumed run rewrites
    every epoch the checkpoint holds, so log lines a kill cut off come back and each epoch shows
    exactly once (TensorBoard purges what came after step 1)."""

    def __init__(self, run: RunDir, columns: list[str] | None = None, hparams: dict | None = None):
        self.run, self.tb, self.columns = run, None, columns  # columns: metrics.csv's, if not a classifier's
        self.hparams = hparams  # the resolved config, flat: TensorBoard's HParams dashboard, once per run

    def on_train_start(self, state):
        from clsf.run.tensorboard import ScalarWriter

        self.tb = ScalarWriter(self.run.tb_dir, purge_step=1 if state.rows else None)
        if self.hparams and not state.rows:
            self.tb.hparams(self.hparams)
        if state.rows:
            self._write(state.rows)
            for row in state.rows:
                self.tb.scalars(row["epoch"], _tb_values(row))

    def _write(self, rows):
        if self.columns:
            self.run.write_metrics(rows, self.columns)
        else:
            self.run.write_metrics(rows)

    def on_epoch_end(self, state, row, improved):
        self._write(state.rows)
        self.tb.scalars(row["epoch"], _tb_values(row))

    def on_train_end(self, state):
        if self.tb is not None:
            self.tb.close()


def _tb_values(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("epoch", "seconds", "peak_mem_mb") and v is not None}


class MistakeChecks(Callback):
    """The mistake detectors (clsf.run.checks): before training, and after every epoch."""

    def __init__(self, checks, engine):
        self.checks, self.engine = checks, engine

    def on_train_start(self, state):
        self.checks.before_training()

    def on_epoch_end(self, state, row, improved):
        self.checks.after_epoch(state.rows, self.engine)


class Progress(Callback):
    """A one-line bar while an epoch trains (on a terminal only) and one line per epoch."""

    def __init__(self, epochs: int):
        self.epochs, self.bar = epochs, None

    def on_epoch_start(self, state):
        from clsf.run.progress import Bar

        self.bar = Bar(True, state.epoch, self.epochs)

    def on_step(self, state, meter, step):
        self.bar(step, meter.n_steps, loss=meter.loss, acc=meter.acc)

    def on_epoch_end(self, state, row, improved):
        self.bar.close()
        print(epoch_line(row, self.epochs))

    def on_train_end(self, state):
        if self.bar is not None:
            self.bar.close()


def epoch_line(row: dict, epochs: int) -> str:
    val = f"  val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f}" if row.get("val_loss") is not None else ""
    return (f"epoch {row['epoch']}/{epochs}  train_loss {row['train_loss']:.4f} train_acc {row['train_acc']:.4f}"
            f"{val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s {row['images_per_s']:.0f} img/s")
