"""Engine parity, through the engines: the same initial weights and the same batches give the same
weights after K steps of each engine's own training step (keras: fit; tf: the GradientTape step;
torch: the torch loop), for every optimizer x schedule x {weight decay, clipping, label smoothing}.

This is the proof behind the README's recipe table. Augmentation is ON: all engines take order,
crops and flips from one numpy plan (clsf.data.order). Dropout is off (its masks come from each
framework's own generator); the slow variant turns it on and compares loss curves statistically.

Tolerances. keras vs tf: 1e-6 absolute — they share the Keras model, optimizer and schedule and
differ only in the step machinery (measured: identical to the bit). keras vs torch: per tensor,
||w_keras - w_torch|| <= 1e-4 * ||w_keras||. float32 has a 6e-8 epsilon and the two frameworks sum
convolutions in different orders, so the first gradients already differ by ~1e-7 relative; 24
steps (Adam's division by sqrt(v) amplifies near-zero coordinates most) bring that to <= 3e-5
measured, so 1e-4 leaves a margin of 5x and more, while every rule change tried in
test_parity_has_teeth moves the weights by 1e-2 or more.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clsf.config import SCHEDULES, build_config
from clsf.data.synthetic import make_synthetic
from clsf.engines.base import Meter

pytestmark = [pytest.mark.tf, pytest.mark.torch]

N, B, EPOCHS, K = 180, 16, 2, 3  # images, batch, epochs, classes: 2 epochs of 12 steps, the last partial
# a learnable task (a pattern per class plus noise): random labels on noise images make a chaotic
# trajectory, where one rounding difference flips a ReLU and the runs part for reasons of float noise
_DS = make_synthetic(f"synthetic:train={N},test=3,size=8x8x3,classes={K},seed=0")
X, Y = _DS["train"].x, _DS["train"].y
MODELS = {
    "seed-cnn": ["model.name=seed-cnn", "model.args.widths=[4, 8]", "model.args.dense=16", "model.args.dropout=0.0"],
    "resnet-s": ["model.name=resnet-s", "model.args.widths=[8, 8, 8]", "model.args.blocks=1"],  # batch norm, training mode
}
# peak rates usual for each rule; a much larger Adam step on this 4-filter model turns rounding
# noise into a different trajectory (a ReLU unit dies in one framework and not the other)
OPTIMIZERS = {"sgd": ["optim.name=sgd"], "sgd-nesterov": ["optim.name=sgd", "optim.nesterov=true"],
              "adam": ["optim.name=adam"], "adamw": ["optim.name=adamw"], "rmsprop": ["optim.name=rmsprop"]}
LR = {"sgd": 0.02, "sgd-nesterov": 0.02, "adam": 0.002, "adamw": 0.002, "rmsprop": 0.002}
LR_SCALE = {"seed-cnn": 1.0, "resnet-s": 0.5}
SCHEDULE_ARGS = {"constant": [], "step": ["optim.step_epochs=1", "optim.gamma=0.5"], "cosine": [],
                 "onecycle": ["optim.warmup_epochs=1"]}
REGULARISED = ["optim.weight_decay=0.05", "optim.clip_norm=0.5", "optim.label_smoothing=0.1"]
assert set(SCHEDULE_ARGS) == set(SCHEDULES)  # a new schedule must join the parity test


def overrides(model: str, optimizer: str, schedule: str, regularised: bool) -> list[str]:
    return (MODELS[model] + OPTIMIZERS[optimizer] + [f"optim.lr={LR[optimizer] * LR_SCALE[model]}",
            f"optim.schedule={schedule}"] + SCHEDULE_ARGS[schedule] + (REGULARISED if regularised else [])
            + ["data.hflip=true", "data.crop_padding=1"])


def train_engines(engines, extra: list[str], epochs: int = EPOCHS, x=X, y=Y) -> dict:
    """Build each engine from one config, give every engine the first one's initial weights, run
    `epochs` epochs of its own train_epoch; return {engine: (neutral weights, [epoch losses])}."""
    from clsf.engines import create_engine
    from clsf.run.setup import build_spec

    out, initial = {}, None
    for name in engines:
        cfg = build_config(flags={"engine": name, "epochs": epochs, "batch_size": B, "device": "cpu"}, overrides=extra)
        spec = build_spec(cfg, x.shape[1:], K)
        engine = create_engine(cfg, spec, -(-len(y) // B))
        if initial is None:
            initial = neutral(engine)
        else:
            set_neutral(engine, initial)
        losses = []
        for epoch in range(epochs):
            meter = Meter(epoch, engine.global_step(), len(y), B)
            engine.train_epoch(x, y, epoch, meter)
            losses.append(meter.loss)
        assert engine.global_step() == epochs * -(-len(y) // B)
        out[name] = (neutral(engine), losses)
    return out


def neutral(engine) -> dict:
    from clsf.models import transfer

    if engine.name == "torch":
        return transfer.torch_weights(engine.model, engine.spec)
    return transfer.keras_weights(engine.model, engine.spec)


def set_neutral(engine, weights) -> None:
    from clsf.models import transfer

    if engine.name == "torch":
        transfer.set_torch_weights(engine.model, engine.spec, weights)
    else:
        transfer.set_keras_weights(engine.model, engine.spec, weights)


def assert_same_weights(a: dict, b: dict, rel: float = 0.0, abs_: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for layer in a:
        for key in a[layer]:
            u, v = a[layer][key].astype(np.float64), b[layer][key].astype(np.float64)
            err = np.linalg.norm(u - v)
            assert err <= rel * np.linalg.norm(u) + abs_ * np.sqrt(u.size), \
                f"{layer}/{key}: ||difference|| {err:.3g} vs ||weights|| {np.linalg.norm(u):.3g}"


def check(model: str, optimizer: str, schedule: str, regularised: bool, engines=("keras", "torch")) -> None:
    extra = overrides(model, optimizer, schedule, regularised)
    runs = [(train_engines(engines, extra), 1e-4)]
    if model == "resnet-s":
        # Batch norm's backward pass subtracts means (cancellation), and a stem conv feeding it gets
        # gradients whose float noise Adam's normalised early steps can turn into a visible step,
        # so after 24 steps the trajectories may part by up to a few 1e-2 (measured up to 4e-2).
        # The rules themselves are held to 1e-4 on the first step: moving statistics, scale/shift
        # and every optimizer update, where nothing has had time to amplify.
        # After 24 steps the whole weight vector is compared (a zero-initialised shift has too small
        # a norm to be its own yardstick).
        runs = [(train_engines(engines, extra, epochs=1, x=X[:B], y=Y[:B]), 1e-5), (runs[0][0], 1e-1)]
    for i, (got, rel) in enumerate(runs):
        ref = got["keras"][0]
        if "tf" in got:
            assert_same_weights(ref, got["tf"][0], abs_=1e-6)
        if "torch" in got:
            if i == 1:
                assert_same_weights(whole(ref), whole(got["torch"][0]), rel=rel)
            else:
                assert_same_weights(ref, got["torch"][0], rel=rel)


def whole(weights: dict) -> dict:
    """Every tensor of the model as one vector, for a model-level comparison."""
    return {"model": {"all": np.concatenate([v.ravel() for d in weights.values() for v in d.values()])}}


CASES = [(o, s, r) for o in OPTIMIZERS for s in SCHEDULE_ARGS for r in (False, True)]
ids = [f"{o}-{s}-{'wd+clip+ls' if r else 'plain'}" for o, s, r in CASES]


@pytest.mark.parametrize("optimizer,schedule,regularised", CASES, ids=ids)
def test_keras_and_torch_reach_the_same_weights(optimizer, schedule, regularised):
    # one case per optimizer also runs the tf engine: it shares Keras' optimizer and schedule, so
    # what it adds (the GradientTape step) does not vary with them
    tf_too = schedule == "onecycle" and regularised
    check("seed-cnn", optimizer, schedule, regularised, ("keras", "tf", "torch") if tf_too else ("keras", "torch"))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])  # every optimizer: the slow variant below
def test_batch_norm_model_in_training_mode(optimizer):
    check("resnet-s", optimizer, "cosine", True, ("keras", "tf", "torch") if optimizer == "adam" else ("keras", "torch"))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,schedule,regularised", CASES, ids=ids)
def test_batch_norm_model_every_case_every_engine(optimizer, schedule, regularised):
    check("resnet-s", optimizer, schedule, regularised, ("keras", "tf", "torch"))


def _torch_sgd(params, o):
    import torch

    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum)


def _torch_rmsprop(params, o):
    import torch

    return torch.optim.RMSprop(params, lr=o.lr, alpha=o.rho, eps=o.eps)


def _torch_adam(params, o):
    import torch

    return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)


def _eps_times_10(params, o):
    from clsf.engines.torch_optim import KerasRule

    return KerasRule(params, dataclasses.replace(o, eps=o.eps * 10))


def _coupled_decay(params, o):
    import torch

    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


SABOTAGE = [("torch's own SGD under cosine", _torch_sgd, "sgd", "cosine", False),
            ("torch's own SGD under step", _torch_sgd, "sgd", "step", False),
            ("torch's own RMSprop", _torch_rmsprop, "rmsprop", "constant", False),
            ("torch's own Adam (eps on the corrected root)", _torch_adam, "adam", "constant", False),
            ("Adam's epsilon moved", _eps_times_10, "adam", "constant", False),
            ("weight decay coupled into the gradient", _coupled_decay, "sgd", "constant", True)]


def test_batch_norm_statistics_have_teeth(monkeypatch):
    """torch's own running-variance update (unbiased) instead of Keras' (biased) must fail."""
    import torch

    from clsf.models import torch as builders

    monkeypatch.setattr(builders._KerasVariance, "forward", lambda self, x: torch.nn.modules.batchnorm._BatchNorm.forward(self, x))
    with pytest.raises(AssertionError, match="moving_variance"):
        check("resnet-s", "sgd", "constant", False)


@pytest.mark.parametrize("what,factory,optimizer,schedule,regularised", SABOTAGE, ids=[s[0] for s in SABOTAGE])
def test_parity_has_teeth(what, factory, optimizer, schedule, regularised, monkeypatch):
    """Swap another rule into the torch engine: the same comparison must fail."""
    monkeypatch.setattr("clsf.engines.torch_loop.KerasRule", factory)
    with pytest.raises(AssertionError, match="difference"):
        check("seed-cnn", optimizer, schedule, regularised)


@pytest.mark.slow
def test_loss_curves_agree_with_dropout_and_augmentation_on():
    """Dropout masks differ between frameworks, so weights drift apart; what must agree is the
    training itself: per-epoch losses of keras and torch within the seed-to-seed spread."""
    ds = make_synthetic(f"synthetic:train=600,test=10,size=12x12x3,classes={K},seed=1")
    x, y = ds["train"].x, ds["train"].y
    curves = {e: [] for e in ("keras", "torch")}
    for seed in range(3):
        extra = MODELS["seed-cnn"][:-1] + ["model.args.dropout=0.3", "optim.lr=0.003", "data.hflip=true",
                                           "data.crop_padding=2", f"seed={seed}"]
        got = train_engines(("keras", "torch"), extra, epochs=3, x=x, y=y)
        for e in curves:
            curves[e].append(got[e][1])
    k, t = np.array(curves["keras"]), np.array(curves["torch"])  # (seeds, epochs)
    spread = np.maximum(k.std(0), t.std(0)) + 0.01
    assert np.all(np.abs(k.mean(0) - t.mean(0)) <= 3 * spread), (k.mean(0), t.mean(0), spread)
    assert k.mean(0)[-1] < k.mean(0)[0] and t.mean(0)[-1] < t.mean(0)[0]  # both learn
