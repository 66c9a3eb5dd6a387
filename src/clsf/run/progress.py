"""A one-line progress bar for every engine (on a terminal only)."""

from __future__ import annotations

import sys
import time


class Bar:
    def __init__(self, enabled: bool, epoch: int, epochs: int):
        self.enabled = enabled and sys.stdout.isatty()
        self.prefix = f"epoch {epoch + 1}/{epochs}"
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, step: int, n_steps: int, loss: float, acc: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.1 and step + 1 < n_steps:  # redraw at most 10 times a second
            return
        self.last = now
        width = 24
        done = int(width * (step + 1) / n_steps)
        bar = "=" * done + (">" if done < width else "") + " " * (width - done - 1)
        rate = (step + 1) / max(now - self.start, 1e-9)
        sys.stdout.write(f"\r{self.prefix} [{bar}] {step + 1}/{n_steps} loss {loss:.4f} acc {acc:.4f} {rate:.1f} it/s ")
        sys.stdout.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
