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
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clsf.config import SCHEDULES, build_config
from clsf.data.synthetic import make_synthetic
from clsf.engines.base import Meter
from clsf.techniques import BATCH

pytestmark = [pytest.mark.tf, pytest.mark.torch]

N, B, EPOCHS, K = 180, 16, 2, 3  # images, batch, epochs, classes: 2 epochs of 12 steps, the last partial
# a learnable task (a pattern per class plus noise): random labels on noise images make a chaotic
# trajectory, where one rounding difference flips a ReLU and the runs part for reasons of float noise
_DS = make_synthetic(f"synthetic:train={N},test=3,size=8x8x3,classes={K},seed=0")
X, Y = _DS["train"].x, _DS["train"].y
MODELS = {
    "seed-cnn": ["model.name=seed-cnn", "model.args.widths=[4, 8]", "model.args.dense=16", "model.args.dropout=0.0"],
    "resnet-s": ["model.name=resnet-s", "model.args.widths=[8, 8, 8]", "model.args.blocks=1"],  # batch norm, training mode
    # airbench94's own network options: batch norm without a learned scale, biases scaled 8x (64x
    # their steps), momentum 0.4, epsilon 1e-12; dirac init; a frozen stem kernel; logits x 1/9
    "airbench94": ["model.name=airbench", "model.args.widths=[16, 16]", "model.args.stem=12", "model.args.bn_momentum=0.4",
                   "model.args.bn_epsilon=1e-12", "model.args.bn_scale=false", "model.args.bias_scale=8.0",
                   "model.args.dirac=true", "model.args.whiten_frozen=true", "model.args.logit_scale=0.111"],
}
BN_MODELS = ("resnet-s", "airbench94")
# peak rates usual for each rule; a much larger Adam step on this 4-filter model turns rounding
# noise into a different trajectory (a ReLU unit dies in one framework and not the other)
OPTIMIZERS = {"sgd": ["optim.name=sgd"], "sgd-nesterov": ["optim.name=sgd", "optim.nesterov=true"],
              "adam": ["optim.name=adam"], "adamw": ["optim.name=adamw"], "rmsprop": ["optim.name=rmsprop"]}
LR = {"sgd": 0.02, "sgd-nesterov": 0.02, "adam": 0.002, "adamw": 0.002, "rmsprop": 0.002}
LR_SCALE = {"seed-cnn": 1.0, "resnet-s": 0.5, "airbench94": 0.5}
SCHEDULE_ARGS = {"constant": [], "step": ["optim.step_epochs=1", "optim.gamma=0.5"], "cosine": [],
                 "linear": ["optim.min_lr=0.0002"], "onecycle": ["optim.warmup_epochs=1"]}
REGULARISED = ["optim.weight_decay=0.05", "optim.clip_norm=0.5", "optim.label_smoothing=0.1"]
assert set(SCHEDULE_ARGS) == set(SCHEDULES)  # a new schedule must join the parity test


def overrides(model: str, optimizer: str, schedule: str, regularised: bool) -> list[str]:
    return (MODELS[model] + OPTIMIZERS[optimizer] + [f"optim.lr={LR[optimizer] * LR_SCALE[model]}",
            f"optim.schedule={schedule}"] + SCHEDULE_ARGS[schedule] + (REGULARISED if regularised else [])
            + ["data.hflip=true", "data.crop_padding=1"])


def train_case(name: str, extra: list[str], epochs: int, x, y, initial: dict | None = None, keep_initial=None):
    """One engine built from the config, given `initial` weights (else its own, handed to
    keep_initial), through `epochs` epochs of its own train_epoch: (neutral weights, [epoch losses]).
    With optim.ema the weights are the average (what the run would report on and checkpoint)."""
    from clsf.engines import create_engine
    from clsf.techniques.averaging import averaged
    from clsf.run.setup import build_spec

    cfg = build_config(flags={"engine": name, "epochs": epochs, "batch_size": B, "device": "cpu"}, overrides=extra)
    spec = build_spec(cfg, x.shape[1:], K)
    engine = create_engine(cfg, spec, -(-len(y) // B))
    if initial is None:
        keep_initial(neutral(engine))
    else:
        set_neutral(engine, initial)
    engine = averaged(engine, cfg.optim, epochs * -(-len(y) // B))
    losses = []
    for epoch in range(epochs):
        meter = Meter(epoch, engine.global_step(), len(y), B)
        engine.train_epoch(x, y, epoch, meter)
        losses.append(meter.loss)
    assert engine.global_step() == epochs * -(-len(y) // B)
    return (engine.average if cfg.optim.ema else neutral(engine)), losses


def train_engines(engines, extra: list[str], epochs: int = EPOCHS, x=X, y=Y) -> dict:
    """Every engine from one config and the first one's initial weights: {engine: (weights, losses)};
    the first engine's initial weights under "initial"."""
    out = {}
    for name in engines:
        out[name] = train_case(name, extra, epochs, x, y, out.get("initial"), lambda w: out.update(initial=w))
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


def plan(model: str, optimizer: str, schedule: str, regularised: bool) -> list[dict]:
    """The runs one case compares: the config, epochs and images, and the tolerance on weights."""
    extra = overrides(model, optimizer, schedule, regularised)
    if model not in BN_MODELS:
        return [{"overrides": extra, "epochs": EPOCHS, "n": N, "rel": 1e-4, "whole": False}]
    # Batch norm's backward pass subtracts means (cancellation), and a stem conv feeding it gets
    # gradients whose float noise Adam's normalised early steps can turn into a visible step,
    # so after 24 steps the trajectories may part by up to a few 1e-2 (measured up to 4e-2).
    # The rules themselves are held to 1e-5 on the first step: moving statistics, scale/shift
    # and every optimizer update, where nothing has had time to amplify.
    # After 24 steps the whole weight vector is compared (a zero-initialised shift has too small
    # a norm to be its own yardstick).
    return [{"overrides": extra, "epochs": 1, "n": B, "rel": 1e-5, "whole": False},
            {"overrides": extra, "epochs": EPOCHS, "n": N, "rel": 1e-1, "whole": True}]


# keras' runs of every case this session checked: the reference the Keras-backend rows compare with
KERAS_RUNS: dict[str, tuple[dict, dict, dict]] = {}  # key -> (run plan, initial weights, keras' weights)


def compare(ref: dict, got: dict, run: dict) -> None:
    if run["whole"]:
        assert_same_weights(whole(ref), whole(got), rel=run["rel"])
    else:
        assert_same_weights(ref, got, rel=run["rel"])


def check(model: str, optimizer: str, schedule: str, regularised: bool, engines=("keras", "torch")) -> None:
    for i, run in enumerate(plan(model, optimizer, schedule, regularised)):
        got = train_engines(engines, run["overrides"], run["epochs"], X[:run["n"]], Y[:run["n"]])
        KERAS_RUNS[f"{model}-{optimizer}-{schedule}-{int(regularised)}-{i}"] = (run, got["initial"], got["keras"][0])
        if "tf" in got:
            assert_same_weights(got["keras"][0], got["tf"][0], abs_=1e-6)
        if "torch" in got:
            compare(got["keras"][0], got["torch"][0], run)


def whole(weights: dict) -> dict:
    """Every tensor of the model as one vector, for a model-level comparison."""
    return {"model": {"all": np.concatenate([v.ravel() for d in weights.values() for v in d.values()])}}


CASES = [(o, s, r) for o in OPTIMIZERS for s in SCHEDULE_ARGS for r in (False, True)]
ids = [f"{o}-{s}-{'wd+clip+ls' if r else 'plain'}" for o, s, r in CASES]
# every schedule is the one Python function of the step (clsf.engines.schedule): linear's rows but
# airbench94_muon's optimizer (Nesterov SGD) are `long`, out of the default suite's 12 minutes
PARAMS = [pytest.param(*case, id=i, marks=pytest.mark.long if case[1] == "linear" and case[0] != "sgd-nesterov" else ())
          for case, i in zip(CASES, ids)]


@pytest.mark.parametrize("optimizer,schedule,regularised", PARAMS)
def test_keras_and_torch_reach_the_same_weights(optimizer, schedule, regularised):
    # one case per optimizer also runs the tf engine: it shares Keras' optimizer and schedule, so
    # what it adds (the GradientTape step) does not vary with them
    tf_too = schedule == "onecycle" and regularised
    check("seed-cnn", optimizer, schedule, regularised, ("keras", "tf", "torch") if tf_too else ("keras", "torch"))


@pytest.mark.parametrize("optimizer", [pytest.param("sgd", marks=pytest.mark.slow), pytest.param("adam", marks=pytest.mark.long)])  # every optimizer: the slow variant below
def test_batch_norm_model_in_training_mode(optimizer):
    check("resnet-s", optimizer, "cosine", True, ("keras", "tf", "torch") if optimizer == "adam" else ("keras", "torch"))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,schedule,regularised", CASES, ids=ids)
def test_batch_norm_model_every_case_every_engine(optimizer, schedule, regularised):
    check("resnet-s", optimizer, schedule, regularised, ("keras", "tf", "torch"))


@pytest.mark.long  # an equivalence (13 s), in CI's second step: the default suite keeps under 12 minutes
def test_airbench94_network_options_in_every_engine(monkeypatch):
    """airbench94's batch norm, dirac init, frozen stem kernel and scaled logits: keras, tf and torch
    take the same steps; the teeth: torch's batch norm ignoring bias_scale, or its stem kernel
    training, is caught by the same comparison."""
    from clsf.models import torch as builders

    check("airbench94", "sgd-nesterov", "onecycle", True, ("keras", "tf", "torch"))
    configure = builders._KerasVariance.configure
    monkeypatch.setattr(builders._KerasVariance, "configure", lambda self, scale, bias_scale, *rest: configure(self, scale, 1.0, *rest))
    with pytest.raises(AssertionError, match="difference"):  # the biases (and, through the clipped norm, every gradient)
        check("airbench94", "sgd-nesterov", "onecycle", True)
    monkeypatch.setattr(builders._KerasVariance, "configure", configure)
    monkeypatch.setattr(builders.SpecNet, "freeze_kernels", lambda self: None)
    with pytest.raises(AssertionError, match="whiten/kernel: .*difference"):
        check("airbench94", "sgd-nesterov", "onecycle", True)


AVERAGE = ["optim.ema=0.8", "optim.ema_every=2", "data.hflip_alternate=true"]  # with airbench's alternating flips
LOOKAHEAD = ["optim.lookahead=true", "optim.ema_power=3"]  # airbench's form: the weights trained reset to the average


@pytest.mark.parametrize("form", ["ema", "lookahead"])
def test_every_engine_averages_to_the_same_weights(form):
    """optim.ema (and its Lookahead form with airbench's ramp): from the same weights and batches,
    keras, tf and torch end on the same average (the rule is numpy over the weights each hands
    over); the teeth: a torch run that averaged on other steps, not at all, or (Lookahead) without
    resetting the weights it trains, is caught by the same comparison."""
    base = overrides("seed-cnn", "sgd-nesterov", "cosine", True)
    form_keys = LOOKAHEAD if form == "lookahead" else []
    got = train_engines(("keras", "tf", "torch"), base + AVERAGE + form_keys)
    assert_same_weights(got["keras"][0], got["tf"][0], abs_=1e-6)
    assert_same_weights(got["keras"][0], got["torch"][0], rel=1e-4)
    others = [base + AVERAGE + form_keys + ["optim.ema_every=3"], base]  # other steps; no average
    if form == "lookahead":
        others.append(base + AVERAGE + ["optim.ema_power=3"])  # the same average, the weights never reset
    for other in others:
        off = train_case("torch", other, EPOCHS, X, Y, got["initial"])[0]
        with pytest.raises(AssertionError, match="difference"):
            assert_same_weights(got["keras"][0], off, rel=1e-4)


MIXING = ["data.mixup=0.4", "data.cutmix=1.0"]  # each batch one or the other, from the shared plan


def _skipped(self, x, y, p, classes):
    """torch without the technique: the images as they came, hard labels made one-hot."""
    import torch

    return x, (torch.nn.functional.one_hot(y, classes).float() if self.soft_labels else y)


@pytest.mark.parametrize("technique", [pytest.param(t, id=t.key) for t in BATCH])
def test_every_engine_trains_alike_with_each_batch_technique(technique, monkeypatch):
    """Every registered batch technique (its last example: mixup and cutmix together), with label
    smoothing: keras, tf and torch reach the same weights; the teeth: torch skipping it is caught."""
    t = list(technique.examples().values())[-1]
    extra = overrides("seed-cnn", "adam", "cosine", True) + t.overrides()
    got = train_engines(("keras", "tf", "torch"), extra)
    assert_same_weights(got["keras"][0], got["tf"][0], abs_=1e-6)
    assert_same_weights(got["keras"][0], got["torch"][0], rel=1e-4)
    monkeypatch.setattr(technique, "torch", _skipped)
    off = train_case("torch", extra, EPOCHS, X, Y, got["initial"])[0]
    with pytest.raises(AssertionError, match="difference"):
        assert_same_weights(got["keras"][0], off, rel=1e-4)


def test_frozen_batch_norm_statistics_train_alike_in_every_engine(monkeypatch):
    """model.bn_frozen: every batch norm normalises by its moving statistics in training too, its scale
    and shift training: keras, tf and torch reach the same weights, the statistics untouched; the
    teeth: torch's batch norm using batch statistics after all is caught."""
    from clsf.models import torch as builders

    extra = overrides("resnet-s", "sgd", "cosine", True) + ["model.bn_frozen=true"]
    got = train_engines(("keras", "tf", "torch"), extra)
    assert_same_weights(got["keras"][0], got["tf"][0], abs_=1e-6)
    assert_same_weights(got["keras"][0], got["torch"][0], rel=1e-4)
    for layer, w in got["keras"][0].items():
        if "moving_mean" in w:
            assert np.array_equal(w["moving_mean"], got["initial"][layer]["moving_mean"]), layer
    configure = builders._KerasVariance.configure
    monkeypatch.setattr(builders._KerasVariance, "configure", lambda self, scale, bias_scale, frozen=False:
                        configure(self, scale, bias_scale, False))
    off = train_case("torch", extra, EPOCHS, X, Y, got["initial"])[0]
    with pytest.raises(AssertionError, match="difference"):
        assert_same_weights(got["keras"][0], off, rel=1e-4)


def _torch_weight_semantics(self, logits, y):
    """torch's own cross_entropy(weight=w): the batch's weighted losses over the sum of its weights."""
    import torch

    w = torch.tensor(self.weights)
    per = torch.nn.functional.cross_entropy(logits, y, weight=w, label_smoothing=self.smoothing, reduction="none")
    return per * len(y) / w[y].sum()


@pytest.mark.parametrize("mixing", [False, True], ids=["labels", "mixed"])
def test_every_engine_weighs_classes_alike(mixing, monkeypatch):
    """optim.class_weight (resolved: one weight per class) with label smoothing, on hard labels and on
    mixup/cutmix's soft ones: keras, tf and torch reach the same weights; the teeth: torch's own
    weighting (dividing by the batch's sum of weights instead of its size) is caught."""
    extra = overrides("seed-cnn", "adam", "cosine", True) + ["optim.class_weight=[0.5, 2.0, 1.5]"] + (MIXING if mixing else [])
    got = train_engines(("keras", "tf", "torch"), extra)
    assert_same_weights(got["keras"][0], got["tf"][0], abs_=1e-6)
    assert_same_weights(got["keras"][0], got["torch"][0], rel=1e-4)
    unweighted = train_case("torch", overrides("seed-cnn", "adam", "cosine", True) + (MIXING if mixing else []), EPOCHS, X, Y,
                            got["initial"])[0]
    with pytest.raises(AssertionError, match="difference"):  # the weights do something
        assert_same_weights(got["keras"][0], unweighted, rel=1e-4)
    if not mixing:
        monkeypatch.setattr("clsf.techniques.loss.Loss.torch", _torch_weight_semantics)
        off = train_case("torch", extra, EPOCHS, X, Y, got["initial"])[0]
        with pytest.raises(AssertionError, match="difference"):
            assert_same_weights(got["keras"][0], off, rel=1e-4)


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


# -- Keras on its other backends: the same cases, each backend in a process of its own ----------------
# Tolerances: those of keras vs torch above, for the same reason. The JAX backend compiles the step
# with XLA and the torch backend runs torch's kernels, so their convolutions sum in other orders than
# TensorFlow's (measured first-step differences ~1e-7 relative, as for the torch engine); the
# optimizer, schedule, loss and batch-norm code is Keras' own on every backend.
BACKENDS = ("keras-jax", "keras-torch")
WORKER = Path(__file__).parent / "keras_backend_worker.py"


SABOTAGED = {"adam-eps": "seed-cnn-adam-constant-0-0", "bn-defaults": "resnet-s-sgd-cosine-1-0"}  # a rule broken on purpose
# the default suite's rows: with the two sabotaged cases (adam-constant, the batch-norm model under
# sgd-cosine), every schedule once and rmsprop, nesterov SGD, adam and SGD (adamw under -m slow),
# decay+clip+smoothing on and off; the rules are Keras' own Python on every backend, what a backend
# changes is the arithmetic (-m slow: all 40 cases on both models)
DEFAULT_ROWS = {"seed-cnn-rmsprop-onecycle-1-0", "resnet-s-adam-cosine-1-0"}  # the rest (SGD included) under -m slow


def run_backends(engines, runs: dict, tmp_path) -> dict:
    """Each engine in its own process (one thread each, side by side) over `runs` (key -> (plan,
    initial weights, _)), and the SABOTAGED cases once more with their rule broken: {engine: {key: weights}}."""
    from clsf.models.transfer import load_npz, save_npz

    cases = []
    for key, (run, initial, _) in runs.items():
        save_npz(tmp_path / f"{key}-init.npz", initial)
        case = {"key": key, "overrides": run["overrides"], "epochs": run["epochs"], "n": run["n"],
                "init": str(tmp_path / f"{key}-init.npz")}
        cases.append(case)
        cases += [{**case, "key": f"{key}+{what}", "sabotage": what} for what, k in SABOTAGED.items() if k == key]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    procs = {}
    for engine in engines:
        (tmp_path / engine).mkdir()
        procs[engine] = subprocess.Popen([sys.executable, str(WORKER), engine, str(tmp_path / "cases.json"),
                                          str(tmp_path / engine)], env=env, stderr=subprocess.PIPE, text=True)
    for engine, p in procs.items():
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    return {e: {c["key"]: load_npz(tmp_path / e / f"{c['key']}.npz") for c in cases} for e in engines}


def backend_rows(tmp_path, keys=None) -> None:
    """keras-jax and keras-torch against keras over the KERAS_RUNS named by `keys` (all: None)."""
    # keras' runs of the rows' cases (the tests above made most of them; -m or -k may have left some out)
    needed = set(SABOTAGED.values()) | set(keys or ())
    for model in MODELS:
        for o, sch, r in CASES:
            if f"{model}-{o}-{sch}-{int(r)}-0" in needed and f"{model}-{o}-{sch}-{int(r)}-0" not in KERAS_RUNS:
                check(model, o, sch, r, engines=("keras",))
    runs = {k: v for k, v in KERAS_RUNS.items() if keys is None or k in keys or k in SABOTAGED.values()}
    got = run_backends(BACKENDS, runs, tmp_path)
    for engine in BACKENDS:
        for key, (run, _, ref) in runs.items():
            try:
                compare(ref, got[engine][key], run)
            except AssertionError as e:
                raise AssertionError(f"{engine}, case {key}: {e}") from None
    for what, key in SABOTAGED.items():  # the teeth: the same comparison fails with the rule broken
        if key in runs:
            with pytest.raises(AssertionError, match="difference"):
                compare(runs[key][2], got["keras-jax"][f"{key}+{what}"], runs[key][0])
    assert all(key in runs for key in SABOTAGED.values())


@pytest.mark.jax
@pytest.mark.long
def test_keras_on_jax_and_on_torch_reach_the_weights_of_keras_on_tensorflow(tmp_path):
    """From keras' initial weights, through keras-jax and keras-torch: every optimizer, every
    schedule, with and without decay+clip+smoothing, on seed-cnn and the batch-norm model; with
    teeth (Adam's epsilon moved, Keras' batch-norm defaults) in the JAX process."""
    backend_rows(tmp_path, DEFAULT_ROWS)


@pytest.mark.slow
@pytest.mark.jax
def test_keras_backends_every_case_every_model(tmp_path):
    """Every case on both models (keras' runs made here where the tests above did not make them)."""
    for model in MODELS:
        for o, sch, r in CASES:
            if f"{model}-{o}-{sch}-{int(r)}-0" not in KERAS_RUNS:
                check(model, o, sch, r, engines=("keras",))
    backend_rows(tmp_path)
