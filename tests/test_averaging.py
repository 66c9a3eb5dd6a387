"""optim.ema: the weight average's rule, that a run reports on (and checkpoints) the average while
training its own weights unchanged, and that a resume inside an epoch continues it exactly.
Every engine averaging the same bits is in test_parity.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from clsf.models.transfer import load_npz
from clsf.run import rundir
from clsf.techniques.averaging import Averaged
from helpers import engine_params, long, tiny_config

DATA = "synthetic:train=120,test=40,size=10x10x3,classes=3"


class _Weights:
    """The part of an engine the average reads: weights and a step counter."""

    def __init__(self):
        self.step, self.w = 0, {"dense": {"kernel": np.zeros(3, np.float32)}}

    def global_step(self):
        return self.step

    def weights(self):
        return {"dense": {"kernel": self.w["dense"]["kernel"].copy()}}


def test_the_average_follows_its_rule_with_the_warm_up():
    from clsf.engines.base import Meter

    engine = _Weights()
    avg = Averaged(engine, decay=0.9, every=2)

    def train_epoch(x, y, epoch, meter, first_step=0):  # 6 steps: the weights are the step number
        for step in range(6):
            engine.step += 1
            engine.w["dense"]["kernel"][:] = engine.step
            meter.add(step, 0.0, 0)

    engine.train_epoch = train_epoch
    seen = []
    meter = Meter(0, 0, 6, 1, on_step=lambda step: seen.append(avg.updates))
    avg.train_epoch(None, None, 0, meter)
    # updates after steps 2, 4, 6 (every=2), before the loop's callbacks see the step
    assert seen == [0, 1, 1, 2, 2, 3] and avg.updates == 3
    want = 2.0  # the first update takes the weights as they are
    for n, w in ((1, 4.0), (2, 6.0)):
        d = min(0.9, (1 + n) / (10 + n))  # 2/11, then 3/12: the warm-up, below the decay
        want += (1 - d) * (w - want)
    np.testing.assert_allclose(avg.average["dense"]["kernel"], want, rtol=1e-6)
    assert meter.on_step is not None and avg.updates == 3


def test_airbenchs_ramp_and_the_lookahead_reset():
    """ema_power: d = ema * (t / T)^power at step t of T; lookahead: after each update the weights
    trained are the average (so training continues from it)."""
    from clsf.engines.base import Meter

    engine = _Weights()
    engine.set_weights = lambda w: engine.w["dense"]["kernel"].__setitem__(slice(None), w["dense"]["kernel"])
    avg = Averaged(engine, decay=0.9, every=2, power=3, total_steps=6, lookahead=True)

    def train_epoch(x, y, epoch, meter, first_step=0):  # 6 steps, each moving the weights by +1
        for step in range(6):
            engine.step += 1
            engine.w["dense"]["kernel"] += 1
            meter.add(step, 0.0, 0)

    engine.train_epoch = train_epoch
    avg.train_epoch(None, None, 0, Meter(0, 0, 6, 1))
    w = a = 2.0  # step 2: the first update takes the weights (2) as they are
    for t in (4, 6):
        w += 2  # two steps from the reset weights
        d = 0.9 * (t / 6) ** 3
        a += (1 - d) * (w - a)
        w = a  # Lookahead: training goes on from the average
    np.testing.assert_allclose(avg.average["dense"]["kernel"], a, rtol=1e-6)
    np.testing.assert_allclose(engine.w["dense"]["kernel"], a, rtol=1e-6)
    assert a != 6.0  # the ramp averaged: plain training would stand at 6


def _weights_equal(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k][p], b[k][p]) for k in a for p in a[k])


@pytest.mark.torch
def test_the_run_reports_on_the_average_and_trains_as_without_it(tmp_path, capsys):
    """The same seed with and without the average trains the same weights (train_weights.npz is
    the plain run's weights.npz, to the bit); what changes is the model the run reports on:
    weights.npz is the average, and final.json's test metrics are what `clsf evaluate` measures
    from it."""
    from clsf.cli import main
    from clsf.run.train import train

    def cfg(name, *extra):
        return tiny_config("torch", tmp_path, DATA, "optim.name=sgd", "optim.lr=0.05", *extra, epochs=2, run_name=name,
                           batch_size=16)

    plain = train(cfg("plain"), quiet=True)
    ema = train(cfg("ema", "optim.ema=0.8"), quiet=True)
    last = ema / "checkpoints" / "last"
    assert not (plain / "checkpoints/last/train_weights.npz").exists()
    assert _weights_equal(load_npz(last / "train_weights.npz"), load_npz(plain / "checkpoints/last/weights.npz"))
    average, trained = load_npz(last / "weights.npz"), load_npz(last / "train_weights.npz")
    assert not _weights_equal(average, trained)
    assert json.loads((last / "averaging.json").read_text())["updates"] == 2 * 6  # 96 train images, batch 16
    capsys.readouterr()
    assert main(["evaluate", str(ema), "--json"]) == 0
    final, ev = json.loads((ema / "final.json").read_text()), json.loads(capsys.readouterr().out)
    assert ev["test_acc"] == final["test_acc"] and ev["test_loss"] == pytest.approx(final["test_loss"], rel=1e-6)
    # the validation each epoch is on the average too: the rows differ from the plain run's, training means do not
    a, b = rundir.read_metrics(plain), rundir.read_metrics(ema)
    assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], rel=1e-6)
    assert a[-1]["val_loss"] != pytest.approx(b[-1]["val_loss"], rel=1e-4)


@pytest.mark.parametrize("engine", long(engine_params(), "keras", "tf"))
def test_a_resume_inside_an_epoch_continues_the_average(tmp_path, engine):
    from clsf.run.train import train

    def cfg(name):
        return tiny_config(engine, tmp_path, DATA, "optim.name=adam", "optim.schedule=cosine", "data.hflip=true",
                           "optim.ema=0.9", "optim.ema_every=2", epochs=2, run_name=name, batch_size=16)

    whole = train(cfg("whole"), quiet=True)
    cut = train(cfg("cut"), quiet=True, stop_after_steps=3)  # 6 steps an epoch; an odd step: between two updates
    train(resume=cut, quiet=True, stop_after_steps=9)  # inside epoch 2
    assert json.loads((cut / "checkpoints/last/averaging.json").read_text())["updates"] == 4
    if engine == "torch":  # the teeth: the same resume that loses the average's count restarts it, and differs
        lost = tmp_path / "lost"
        shutil.copytree(cut, lost)
        (lost / "checkpoints/last/averaging.json").unlink()
        train(resume=lost, quiet=True)
        with np.load(whole / "predictions.npz") as za, np.load(lost / "predictions.npz") as zb:
            assert np.abs(za["logits"] - zb["logits"]).max() > 1e-4
    train(resume=cut, quiet=True)
    for ra, rb in zip(rundir.read_metrics(whole), rundir.read_metrics(cut), strict=True):
        for k in ("train_loss", "val_loss", "val_acc"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-6, abs=1e-7), (k, ra, rb)
    with np.load(whole / "predictions.npz") as za, np.load(cut / "predictions.npz") as zb:
        assert np.abs(za["logits"] - zb["logits"]).max() <= 1e-6 * max(1.0, np.abs(za["logits"]).max())


@pytest.mark.torch
def test_a_weights_only_resume_starts_the_average_again_from_it(tmp_path, capsys):
    from clsf.run.train import train

    cfg = tiny_config("torch", tmp_path, DATA, "optim.ema=0.9", epochs=2, run_name="r", batch_size=16)
    run = train(cfg, quiet=True, stop_after=1)
    average = load_npz(run / "checkpoints/last/weights.npz")
    train(resume=run, quiet=True, stop_after_steps=7, weights_only=True)  # the first step of epoch 2
    last = run / "checkpoints/last"
    assert json.loads((last / "averaging.json").read_text())["updates"] == 1
    # the training went on from the average: one step from it, and the new average is that step itself
    trained = load_npz(last / "train_weights.npz")
    assert _weights_equal(load_npz(last / "weights.npz"), trained) and not _weights_equal(trained, average)
    train(resume=run, quiet=True)
    assert json.loads((run / "final.json").read_text())["epochs"] == 2
