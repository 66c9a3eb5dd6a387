"""data.mixup / data.cutmix through whole runs: every engine trains on the mixed batches (soft
labels in its loss, accuracy against each row's largest weight) and evaluates on plain images;
a run split over replicas is refused in one line. The pipelines' bit-equality and the plan's
distributions are in test_pipelines.py, the engines' equal weights in test_parity.py."""

from __future__ import annotations

import json

import pytest

from clsf.errors import UserError
from clsf.run import rundir
from helpers import engine_params, long, tiny_config

DATA = "synthetic:train=120,test=40,size=10x10x3,classes=3"


@pytest.mark.parametrize("engine", long(engine_params(), "keras"))
def test_a_mixed_run_trains_and_resumes_in_every_engine(tmp_path, engine):
    from clsf.run.train import train

    def cfg(name, *extra):
        return tiny_config(engine, tmp_path, DATA, "data.mixup=0.4", "data.cutmix=1.0", "optim.label_smoothing=0.1",
                           *extra, epochs=2, run_name=name, batch_size=16)

    whole = train(cfg("whole"), quiet=True)
    cut = train(cfg("cut"), quiet=True, stop_after_steps=3)  # a resume inside an epoch takes the plan from its batch
    train(resume=cut, quiet=True)
    a, b = rundir.read_metrics(whole), rundir.read_metrics(cut)
    for ra, rb in zip(a, b, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-6)
    assert all(0 <= r["train_acc"] <= 1 for r in a)
    plain = train(tiny_config(engine, tmp_path, DATA, "optim.label_smoothing=0.1", epochs=2, run_name="plain", batch_size=16),
                  quiet=True)
    # mixed targets cost more than plain ones: the training loss is not the plain run's
    assert rundir.read_metrics(plain)[0]["train_loss"] != pytest.approx(a[0]["train_loss"], rel=1e-3)
    assert json.loads((whole / "final.json").read_text())["test_images"] == 40


def test_a_run_over_several_replicas_is_refused():
    from clsf.config import build_config
    from clsf.run.train import _check_inputs

    class Prep:
        class train:
            x = None

    cfg = build_config(overrides=["data.cutmix=1.0"])
    with pytest.raises(UserError, match="pair each image with another of its batch, which this run splits over 2 replicas"):
        _check_inputs(cfg, Prep, None, 2)
    _check_inputs(cfg, Prep, None, 1)
