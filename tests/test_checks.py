"""Every mistake detector fires when it should and only then."""

import itertools

import pytest

from clsf.models.zoo import get_spec
from clsf.run.checks import Checks


class FakeEngine:
    def __init__(self, traces=None, steps=1875):
        self.traces, self.steps = traces or {}, steps

    def global_step(self):
        return self.steps

    def diagnostics(self, detail=False):
        return {fn: {"traces": n, "graph_nodes": None} for fn, n in self.traces.items()}


def _rows(losses, accs):
    return [{"epoch": i + 1, "train_loss": l, "train_acc": a, "val_acc": a} for i, (l, a) in enumerate(zip(losses, accs))]


def _fired(spec_args=None, rows=(), traces_per_epoch=None, steps_per_epoch=1875):
    checks = Checks(get_spec("seed-cnn", **(spec_args or {})), 10, quiet=True)
    checks.before_training()
    for i in range(len(rows)):
        checks.after_epoch(list(rows[: i + 1]), FakeEngine((traces_per_epoch or [{}] * len(rows))[i], steps_per_epoch * (i + 1)))
    return {key.split(":")[0] for key, _ in checks.fired}


def test_output_activation():
    assert _fired({"output_activation": "relu"}) == {"output"}
    assert _fired({"output_activation": "softmax"}) == {"output"}
    assert _fired() == set()


def test_chance_level_on_evidence_only():
    assert "chance" in _fired(rows=_rows([2.3], [0.098]))  # the seeds' relu-on-logits MNIST model: 1,875 steps
    assert "chance" not in _fired(rows=_rows([1.5], [0.45]))
    # a healthy slow start: 32 steps of 1,000 images at chance (the built-in sample, lr 0.01, cosine) is no evidence ...
    assert "chance" not in _fired(rows=_rows([2.29], [0.10]), steps_per_epoch=32)
    # ... nor a loss already falling below chance's ln(10) = 2.303 while the accuracy has not moved yet
    assert "chance" not in _fired(rows=_rows([2.10, 1.95], [0.10, 0.105]), steps_per_epoch=150)
    # a loss that stays at chance over enough steps is
    assert "chance" in _fired(rows=_rows([2.31, 2.30], [0.10, 0.10]), steps_per_epoch=150)


def test_flat_training_loss():
    assert "flat" in _fired(rows=_rows([2.30, 2.31, 2.30], [0.3, 0.3, 0.3]))
    assert "flat" not in _fired(rows=_rows([2.30, 1.90, 1.60], [0.3, 0.4, 0.5]))
    assert "flat" not in _fired(rows=_rows([2.30, 2.31], [0.3, 0.3]))  # too early to say


def test_retracing_counts():
    ok = [{"train_step": 2, "predict_step": 1}] * 3  # Keras' fit traces twice at start, then never
    assert "retrace" not in _fired(rows=_rows([2, 1.5, 1], [.3, .4, .5]), traces_per_epoch=ok)
    grows = [{"train_step": 1}, {"train_step": 2}, {"train_step": 2}]  # traced again in epoch 2
    assert "retrace" in _fired(rows=_rows([2, 1.5, 1], [.3, .4, .5]), traces_per_epoch=grows)
    many = [{"train_step": 24}]  # a Python value that changes per step: a trace per step
    assert "retrace" in _fired(rows=_rows([2], [.3]), traces_per_epoch=many)


@pytest.mark.tf
def test_retracing_step_of_the_real_tf_engine_is_caught(tmp_path, capsys):
    import tensorflow as tf

    from clsf.config import build_config
    from clsf.engines.base import Meter
    from clsf.engines.tf_loop import TFLoopEngine
    from clsf.run.setup import build_spec, load_data

    cfg = build_config(flags={"engine": "tf", "epochs": 1, "batch_size": 16, "data": {"name": "synthetic:train=80,test=10,size=8x8x3,classes=3"}},
                       overrides=["model.args.widths=[4, 4]", "model.args.dense=8"])
    prep = load_data(cfg)
    engine = TFLoopEngine(cfg, build_spec(cfg, (8, 8, 3), 3), 4)
    checks = Checks(engine.spec, 3)
    real, step = engine.train_step, itertools.count()

    @tf.function
    def leaky(x, y, i):  # i: a Python int that changes every call, so every call traces
        engine.traces["train_step"] += 1
        return real(x, y)

    engine.train_step = lambda x, y: leaky(x, y, next(step))
    engine.train_epoch(prep.train.x, prep.train.y, 0, Meter(0, 0, len(prep.train), 16))
    checks.after_epoch([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.9, "val_acc": 0.9}], engine)
    assert "the tf.function train_step was traced" in capsys.readouterr().err
