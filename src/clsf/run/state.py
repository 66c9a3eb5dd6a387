"""Where a run stands, and the one schema of a checkpoint's meta.json.

The loop, the mid-epoch checkpoint, resume and the GAN all read and write this, so a checkpoint
written by any of them resumes in any other way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def _no_best() -> dict:
    return {"val_loss": math.inf, "epoch": None, "bad_epochs": 0}


@dataclass
class RunState:
    epoch: int = 0  # epochs finished
    step: int = 0  # batches done inside epoch `epoch + 1` (a mid-epoch checkpoint); 0 at an epoch's end
    global_step: int = 0  # optimizer steps in total
    best: dict = field(default_factory=_no_best)  # lowest monitored loss, its epoch, epochs since it improved
    rows: list[dict] = field(default_factory=list)  # one per finished epoch: what metrics.csv holds
    meter: dict | None = None  # inside an epoch: its running sums so far and the seconds it took
    replicas: int = 1  # replicas that trained (the steps per epoch depend on it)
    stopped_early: bool = False  # early stopping (or a tune study's pruner) ended the run: it is finished
    stopped: str | None = None  # which of the two: "early" | "pruned" (final.json says it)
    fingerprints: dict = field(default_factory=dict)  # hashes of the config and model it trains (resume checks them)
    extra: dict = field(default_factory=dict)  # what a kind of run keeps besides (the GAN: sample quality)
    # in memory only: when the loop ends
    epochs: int = 0  # train up to this many epochs in total
    stop: str | None = None  # why it ends before `epochs`: "early", "pruned", "interrupt" (Ctrl-C) or "pause" (asked to)

    @property
    def done(self) -> bool:
        """Every stop condition, gathered in one place."""
        return self.stop is not None or self.epoch >= self.epochs

    def request_stop(self, reason: str) -> None:
        """Stop at the next step boundary (the first reason given stands)."""
        self.stop = self.stop or reason

    def end_epoch(self, row: dict) -> bool:
        """Record a finished epoch's row; return whether the monitored loss improved (validation
        loss, or training loss without a validation split)."""
        self.rows.append(row)
        self.epoch, self.step, self.meter = row["epoch"], 0, None
        monitored = next((row[k] for k in ("val_loss", "train_loss") if row.get(k) is not None), None)  # None: a GAN
        improved = monitored is not None and monitored < self.best["val_loss"]
        self.best = ({"val_loss": monitored, "epoch": self.epoch, "bad_epochs": 0} if improved
                     else {**self.best, "bad_epochs": self.best["bad_epochs"] + 1})
        return improved

    def to_meta(self) -> dict:
        meta = {"epoch": self.epoch, "global_step": self.global_step, "best": self.best,
                "stopped_early": self.stopped_early, "stopped": self.stopped, "metrics": self.rows[-1] if self.rows else None,
                "rows": self.rows, "replicas": self.replicas, "fingerprints": self.fingerprints, **self.extra}
        if self.step:
            meta.update(step=self.step, meter=self.meter)
        return meta

    @classmethod
    def from_meta(cls, meta: dict, logged_rows: list[dict] | None = None, extra_keys: tuple[str, ...] = ()) -> RunState:
        """A checkpoint's state. Checkpoints hold every epoch's row (log lines a kill cut off come
        back from them); older ones held only the last, completed from `logged_rows` (metrics.csv)."""
        epoch = meta["epoch"]
        rows = meta["rows"] if "rows" in meta else list(logged_rows or [])[:epoch]
        if len(rows) == epoch - 1 and meta.get("metrics"):
            rows.append(meta["metrics"])
        return cls(epoch=epoch, step=meta.get("step", 0), global_step=meta.get("global_step", 0),
                   best=meta.get("best") or _no_best(), rows=rows, meter=meta.get("meter"),
                   replicas=meta.get("replicas", 1), stopped_early=bool(meta.get("stopped_early")),
                   stopped=meta.get("stopped") or ("early" if meta.get("stopped_early") else None),
                   fingerprints=meta.get("fingerprints") or {},
                   extra={k: meta[k] for k in extra_keys if k in meta})
