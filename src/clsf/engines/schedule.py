"""Learning rate as a pure function of the global step, so a resumed run picks the schedule up
exactly where it stopped (the step is all the state there is). The torch engine sets it before
each step; the TensorFlow engines tabulate it one epoch at a time and look it up from the
optimizer's own step counter inside the graph (keras_common.schedule)."""

from __future__ import annotations

import math

from clsf.config import OptimConfig


def lr_at(step: int, steps_per_epoch: int, epochs: int, o: OptimConfig, unfreeze_after: int | None = None) -> float:
    """The rate of global step `step`. With optim.unfreeze_lr and unfreeze_after (freeze=trunk for that
    many epochs), the run is two phases, each the schedule over its own epochs: the head alone at
    optim.lr, then every layer at optim.unfreeze_lr (fastai's fine_tune: two one-cycles)."""
    if o.unfreeze_lr is not None and unfreeze_after:
        from dataclasses import replace

        cut = unfreeze_after * steps_per_epoch
        if step < cut:
            return lr_at(step, steps_per_epoch, unfreeze_after, replace(o, unfreeze_lr=None))
        second = replace(o, lr=o.unfreeze_lr, unfreeze_lr=None, min_lr=min(o.min_lr, o.unfreeze_lr / 10),
                         warmup_epochs=min(o.warmup_epochs, epochs - unfreeze_after))
        return lr_at(step - cut, steps_per_epoch, epochs - unfreeze_after, second)
    total = max(1, steps_per_epoch * epochs)
    warm = int(round(o.warmup_epochs * steps_per_epoch))
    if o.schedule == "onecycle":
        warm = warm or int(0.3 * total)  # one-cycle without an explicit warm-up: 30% of training
        start = o.lr / 25
        if step < warm:
            return start + (o.lr - start) * step / warm
        t = (step - warm) / max(1, total - warm)
        return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    if step < warm:
        return o.lr * (step + 1) / warm
    if o.schedule == "constant":
        return o.lr
    if o.schedule == "step":
        return o.lr * o.gamma ** (step // (o.step_epochs * steps_per_epoch))
    t = min(1.0, (step - warm) / max(1, total - warm))  # the share of the decay behind this step
    if o.schedule == "linear":  # with no warm-up and min_lr 0, airbench94_muon's lr * (1 - step / total)
        return o.min_lr + (o.lr - o.min_lr) * (1 - t)
    return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1 + math.cos(math.pi * t))  # cosine
