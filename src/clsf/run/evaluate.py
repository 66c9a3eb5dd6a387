"""`clsf evaluate`: a run's model (or another checkpoint) on a split, in any engine."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from clsf.errors import UserError
from clsf.run.loop import logits_of
from clsf.run.rundir import RunDir
from clsf.metrics import split_report
from clsf.run.setup import checkpoint_engine, load_data


def evaluate(run: str | Path, which: str | None = None, engine: str | None = None, split: str = "test",
             data: str | None = None) -> dict:
    """Evaluate a run's checkpoint on a split. With the defaults (the run's model, checkpoints/last)
    this reproduces final.json exactly.

    `engine` loads the run's framework-neutral weights into another engine (a keras run evaluated
    by torch, and the reverse); `data` evaluates on another dataset with the same classes: its test
    split, or every image of a folder without splits. When the split is the run's own test split, the
    report also compares with the logits the run saved."""
    run = RunDir.open(run, None)
    which = run.model_checkpoint(which)
    cfg = run.validate(which)  # every file it reads, before anything else
    trained_with = cfg.engine
    if engine:
        cfg.engine = engine
    if split not in ("test", "val"):
        raise UserError(f"split '{split}' is not known; use test or val.")
    if data:
        cfg.data.name = data
        h, w, c = run.image_shape  # another folder's images at the model's input, as predict reads them
        cfg.data.image_size, cfg.data.channels = [h, w], c
        if split == "test":  # another dataset's test images, every one (a folder without splits: all its images)
            cfg.data.val_split, cfg.data.train_subset, cfg.data.test_subset, cfg.data.test_split = 0.0, None, None, 0.0
    prep = load_data(cfg)
    recorded = run.env().get("data", {}).get("test_held_out")
    if not data and recorded and (prep.held_out or {}).get("sha256") != recorded.get("sha256"):
        print(f"clsf: warning: the test images held out of {prep.dataset.source} are not the ones this run held out "
              "(the folder changed since it trained).", file=sys.stderr)
    names = run.env().get("data", {}).get("class_names")
    if names is not None and prep.dataset.class_names != names:
        raise UserError(f"{prep.dataset.source} has classes {', '.join(prep.dataset.class_names)} but the run was trained "
                        f"on {', '.join(names)}; evaluate on data with the same classes.")
    if prep.dataset.image_shape != run.image_shape:
        shape = lambda s: "x".join(map(str, s))  # noqa: E731
        raise UserError(f"{prep.dataset.source} holds {shape(prep.dataset.image_shape)} images but the run's model takes "
                        f"{shape(run.image_shape)}; evaluate on data of that size.")
    part = prep.test if split == "test" else prep.val
    if part is None and data and split == "test":  # a folder of class folders, no test/ inside: all of it
        part, split = prep.train, "all"
    if part is None:
        raise UserError(f"{prep.dataset.source} has no {split} split to evaluate on; use --split "
                        f"{'val' if split == 'test' else 'test'}.")
    if not data and run.env().get("data", {}).get("checksum") not in (None, prep.dataset.checksum):
        print(f"clsf: warning: the data at {prep.dataset.source} changed since this run trained (checksum differs).", file=sys.stderr)
    logits = logits_of(checkpoint_engine(run, cfg, which), part.x, cfg)
    report = {**split_report(logits, part.y, prep.dataset.class_names), "split": split, "engine": cfg.engine,
              "trained_with": trained_with, "checkpoint": which, "weights": run.describe_checkpoint(which)}
    saved = run.predictions()
    if split == "test" and not data and which == (run.final() or {}).get("checkpoint") and saved is not None:
        if len(saved["logits"]) == len(logits):
            report["agreement"] = {"same_prediction": float((saved["logits"].argmax(1) == logits.argmax(1)).mean()),
                                   "max_abs_logit_diff": float(np.abs(saved["logits"] - logits).max())}
    return report
