"""Model-tracked losses (the seeds' add_loss layer and kernel regularisers): every engine adds them
to the training loss, reports the same total, and they reach the gradient."""


import numpy as np
import pytest

from test_parity import X, Y, assert_same_weights, train_engines

pytestmark = [pytest.mark.tf, pytest.mark.torch]
MODEL = """name: penalised
layers:
  - {type: conv, name: conv, filters: 4, activation: relu, l1: 0.001, l2: 0.01}
  - {type: activity_penalty, name: penalty, rate: 0.0005}
  - {type: flatten, name: flatten}
  - {type: dense, name: logits, units: num_classes, l2: 0.02}
"""
PLAIN = MODEL.replace(", l1: 0.001, l2: 0.01", "").replace(", l2: 0.02", "").replace(
    "  - {type: activity_penalty, name: penalty, rate: 0.0005}\n", "")


def _file(tmp_path, text, name="m.yaml"):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def test_every_engine_adds_the_same_model_losses(tmp_path):
    extra = [f"model.name={_file(tmp_path, MODEL)}", "optim.name=sgd", "optim.lr=0.05"]
    got = train_engines(("keras", "tf", "torch"), extra)
    (kw, kl), (tw, tl) = got["keras"], got["torch"]
    assert_same_weights(kw, got["tf"][0], abs_=1e-6)
    assert_same_weights(kw, tw, rel=1e-4)  # the penalties pushed every engine the same way
    assert tl == pytest.approx(kl, rel=1e-5) and got["tf"][1] == pytest.approx(kl, rel=1e-5)  # the same total loss
    # teeth: the penalties are in that loss — the same model and start without them reports less
    plain = train_engines(("keras", "torch"), [f"model.name={_file(tmp_path, PLAIN, 'p.yaml')}", "optim.name=sgd", "optim.lr=0.05"])
    assert all(a > b for a, b in zip(kl, plain["keras"][1])) and all(a > b for a, b in zip(tl, plain["torch"][1]))


@pytest.mark.parametrize("engine", ["keras", "torch"])
def test_the_penalty_alone_moves_the_weights(tmp_path, engine, monkeypatch):
    """The data loss set to zero: only the model's own losses remain, and the weights still move;
    without them nothing moves (the control)."""
    from clsf.techniques.loss import Loss

    if engine == "torch":
        monkeypatch.setattr(Loss, "torch", lambda self, logits, y: 0.0 * logits.sum(1))
    else:
        monkeypatch.setattr(Loss, "keras", lambda self, soft, per_image=False: (lambda y, logits: 0.0 * __import__("keras").ops.sum(logits)))
    for text, moves in ((MODEL, True), (PLAIN, False)):
        extra = [f"model.name={_file(tmp_path, text)}", "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.0"]
        from clsf.config import build_config
        from clsf.engines import create_engine
        from clsf.engines.base import Meter
        from clsf.run.setup import build_spec
        from test_parity import neutral

        cfg = build_config(flags={"engine": engine, "epochs": 1, "batch_size": 16}, overrides=extra)
        eng = create_engine(cfg, build_spec(cfg, X.shape[1:], 3), 12)
        before = neutral(eng)
        eng.train_epoch(X, Y, 0, Meter(0, 0, len(Y), 16))
        after = neutral(eng)
        changed = not np.array_equal(before["conv"]["kernel"], after["conv"]["kernel"])
        assert changed == moves
        if moves:  # L1/L2 shrink the kernel
            assert np.abs(after["conv"]["kernel"]).sum() < np.abs(before["conv"]["kernel"]).sum()
