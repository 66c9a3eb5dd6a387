"""Progress for long work: on a terminal a bar with rate and time left for an epoch (training, the
GAN), redrawn in place; off a terminal (a log, a pipe, CI) a plain line a minute inside a long epoch,
so a log shows the work moving; and elapsed / left for a compare, sweep or tune."""

from __future__ import annotations

import sys
import time


def clock(seconds: float) -> str:
    """1:05 (m:ss), 1:02:05 (h:mm:ss)."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Bar:
    PLAIN_EVERY_S = 60.0  # off a terminal: a line this often inside an epoch

    def __init__(self, enabled: bool, epoch: int, epochs: int, out=None):
        self.out = out or sys.stdout
        tty = self.out.isatty()
        self.enabled, self.plain = enabled and tty, enabled and not tty
        self.prefix = f"epoch {epoch + 1}/{epochs}"
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, step: int, n_steps: int, **values: float) -> None:
        """Step `step` (0-based) of `n_steps` done; `values` (loss=..., acc=...) shown as they are."""
        if self.plain:
            self._line(step, n_steps, values)
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.1 and step + 1 < n_steps:  # redraw at most 10 times a second
            return
        self.last = now
        width = 24
        done = int(width * (step + 1) / n_steps)
        bar = "=" * done + (">" if done < width else "") + " " * (width - done - 1)
        rate = (step + 1) / max(now - self.start, 1e-9)  # steps per second, this epoch so far
        shown = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        self.out.write(f"\r{self.prefix} [{bar}] {step + 1}/{n_steps} {shown} {rate:.1f} it/s "
                       f"ETA {clock((n_steps - step - 1) / rate)} ")
        self.out.flush()

    def _line(self, step: int, n_steps: int, values: dict) -> None:
        now = time.perf_counter()
        if now - self.start < self.PLAIN_EVERY_S or now - self.last < self.PLAIN_EVERY_S or step + 1 >= n_steps:
            return
        self.last = now
        rate = (step + 1) / (now - self.start)
        shown = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        self.out.write(f"{self.prefix} step {step + 1}/{n_steps} {shown} ({clock(now - self.start)} elapsed, about "
                       f"{clock((n_steps - step - 1) / rate)} left)\n")
        self.out.flush()

    def close(self) -> None:
        if self.enabled:
            self.out.write("\r\033[K")
            self.out.flush()


class RunsClock:
    """Elapsed and time left of a compare or sweep: left = the mean time of the runs trained so far
    in this command (skipped ones cost nothing) times the runs still to train. `parallel` (runs
    side by side, on a cluster): the mean wall time between endings instead."""

    def __init__(self, total: int, parallel: bool = False):
        self.total, self.start, self.trained, self.parallel = total, time.perf_counter(), [], parallel

    def done(self, seconds: float, trained: bool) -> None:
        if trained:
            self.trained.append(seconds)

    def line(self, left: int) -> str:
        elapsed = time.perf_counter() - self.start
        if not self.trained or not left:
            return f"elapsed {clock(elapsed)}"
        each = (elapsed if self.parallel else sum(self.trained)) / len(self.trained)
        return f"elapsed {clock(elapsed)}, about {clock(left * each)} left"
