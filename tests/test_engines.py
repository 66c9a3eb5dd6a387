"""The three engines behind one contract, on tiny synthetic data."""

import json

import pytest

from clsf.config import build_config
from clsf.errors import NonFiniteLoss
from clsf.run import rundir
from helpers import read_scalars
from clsf.run.evaluate import evaluate
from clsf.run.train import train
from helpers import engine_params, long, tiny_config

ENGINES = engine_params()
DATA = "synthetic:train=120,test=40,size=12x12x3,classes=3"
SMALL = ["model.args.widths=[8, 8]", "model.args.dense=16"]


def _cfg(engine, tmp_path, *overrides, epochs=2):
    return tiny_config(engine, tmp_path, DATA, *overrides, epochs=epochs, small=SMALL)


@pytest.mark.parametrize("engine", ENGINES)
def test_run_directory_shape_metrics_and_exact_evaluate(engine, tmp_path):
    run = train(_cfg(engine, tmp_path, "batch_size=32"), quiet=True)
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "env.json", "metrics.csv", "tb", "checkpoints", "final.json", "summary.txt",
            "history.png", "confusion.png"} <= names
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"init", "last", "best"}
    assert {p.name for p in (run / "checkpoints" / "init").iterdir()} >= {"weights.npz", "meta.json", "logits.npz"}
    rows = rundir.read_metrics(run)
    assert list(rows[0]) == rundir.METRICS and [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["train_acc"] <= 1 and r["val_loss"] > 0 and r["images_per_s"] > 0 and r["peak_mem_mb"] > 50 for r in rows)
    tags = {t for _, t, _ in read_scalars(run / "tb")}
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= tags
    final = json.loads((run / "final.json").read_text())
    assert len(final["confusion"]) == 3 and sum(map(sum, final["confusion"])) == 40
    assert set(final["per_class_acc"]) == {"class0", "class1", "class2"}
    again = evaluate(run)
    assert again["test_acc"] == final["test_acc"] and again["test_loss"] == final["test_loss"]
    env = json.loads((run / "env.json").read_text())
    assert env["engine"] == engine and env["device"] == "cpu" and "packages" in env and env["data"]["checksum"]
    assert (run / "predictions.npz").exists()
    reloaded = build_config(str(run / "config.yaml"))  # the resolved config is reloadable
    assert reloaded.engine == engine and reloaded.model.args["widths"] == [8, 8]


@pytest.mark.parametrize("engine", long(ENGINES, "keras"))
def test_resume_matches_uninterrupted_run(engine, tmp_path):
    recipe = ["optim.name=adam", "optim.schedule=cosine", "optim.warmup_epochs=1", "data.hflip=true",
              "data.crop_padding=2", "model.args.dropout=0.3", "optim.weight_decay=0.01", "batch_size=25"]
    full = train(_cfg(engine, tmp_path / "a", *recipe, epochs=3), quiet=True)
    part = train(_cfg(engine, tmp_path / "b", *recipe, epochs=3), quiet=True, stop_after=1)
    assert not (part / "final.json").exists() and len(rundir.read_metrics(part)) == 1
    resumed = train(resume=part, quiet=True)
    a, b = rundir.read_metrics(full), rundir.read_metrics(resumed)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-6), (ra["epoch"], key)
    fa, fb = (json.loads((r / "final.json").read_text()) for r in (full, resumed))
    assert fa["test_loss"] == pytest.approx(fb["test_loss"], abs=1e-6) and fa["test_acc"] == fb["test_acc"]


@pytest.mark.parametrize("engine", ENGINES)
def test_non_finite_loss_stops_at_once_keeping_last_good_checkpoint(engine, tmp_path, monkeypatch):
    import clsf.engines.schedule as schedule

    real = schedule.lr_at

    def explode(step, steps_per_epoch, epochs, o, *rest):  # a sane first epoch, then NaN weights
        return real(step, steps_per_epoch, epochs, o, *rest) if step < steps_per_epoch else float("nan")

    module = "clsf.engines.torch_loop" if engine == "torch" else "clsf.engines.keras_common"
    monkeypatch.setattr(f"{module}.lr_at", explode)
    cfg = _cfg(engine, tmp_path, "optim.name=sgd", "optim.momentum=0.0", epochs=3)
    with pytest.raises(NonFiniteLoss, match=r"at epoch 2, step \d+"):
        train(cfg, quiet=True)
    run = next(tmp_path.iterdir())
    assert rundir.checkpoint_meta(run, "last")["epoch"] == 1
    assert len(rundir.read_metrics(run)) == 1 and not (run / "final.json").exists()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no half-written folder


@pytest.mark.parametrize("engine", ENGINES)
def test_output_activation_mistake_is_caught(engine, tmp_path, capsys):
    train(_cfg(engine, tmp_path, "model.args.output_activation=relu", "optim.lr=0.05", epochs=1), quiet=True)
    err = capsys.readouterr().err
    assert "last layer applies 'relu'" in err and "output_activation=linear" in err


@pytest.mark.tf
def test_tf_step_traces_once_despite_partial_last_batch(tmp_path):
    from clsf.engines.base import Meter
    from clsf.engines.tf_loop import TFLoopEngine
    from clsf.run.setup import build_spec, load_data

    cfg = _cfg("tf", tmp_path, "batch_size=50")  # 96 train images -> batches of 50 and 46
    prep = load_data(cfg)
    eng = TFLoopEngine(cfg, build_spec(cfg, prep.dataset.image_shape, 3), 2)
    for epoch in range(2):
        eng.train_epoch(prep.train.x, prep.train.y, epoch, Meter(epoch, eng.global_step(), len(prep.train), 50))
        eng.predict_logits(prep.val.x[:7])  # another size, same graph
    assert len(prep.train) % 50 != 0 and eng.traces == {"train_step": 1, "predict_step": 1}


@pytest.mark.tf
def test_tf_loop_adds_losses_the_model_tracks(tmp_path, monkeypatch):
    import keras

    import clsf.models.keras as mk
    from clsf.engines.base import Meter
    from clsf.engines.tf_loop import TFLoopEngine
    from clsf.run.setup import build_spec, load_data

    cfg = _cfg("tf", tmp_path, "optim.lr=1e-9")
    prep = load_data(cfg)
    spec = build_spec(cfg, prep.dataset.image_shape, 3)

    def epoch_loss():
        meter = Meter(0, 0, len(prep.train), cfg.batch_size)
        TFLoopEngine(cfg, spec, 4).train_epoch(prep.train.x, prep.train.y, 0, meter)
        return meter.loss

    plain = epoch_loss()
    real = mk.build_keras

    def with_penalty(spec):  # an activity regulariser calls add_loss on every forward pass
        m = real(spec)
        out = keras.layers.ActivityRegularization(l2=1.0, name="penalty")(m.output)
        return keras.Model(m.input, out)

    monkeypatch.setattr(mk, "build_keras", with_penalty)
    assert epoch_loss() > plain + 0.01


def test_schedules():
    from clsf.config import OptimConfig
    from clsf.engines.schedule import lr_at

    assert lr_at(57, 10, 5, OptimConfig(lr=0.1)) == 0.1
    step = OptimConfig(lr=0.1, schedule="step", step_epochs=2, gamma=0.5)
    assert [lr_at(s * 10, 10, 6, step) for s in range(6)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    cos = OptimConfig(lr=0.1, schedule="cosine", warmup_epochs=1)
    assert lr_at(0, 10, 5, cos) == pytest.approx(0.01) and lr_at(9, 10, 5, cos) == pytest.approx(0.1)
    assert lr_at(10, 10, 5, cos) == pytest.approx(0.1) and lr_at(50, 10, 5, cos) == pytest.approx(0.0)
    lin = OptimConfig(lr=0.1, schedule="linear")  # airbench94_muon's lr * (1 - step / total)
    assert [lr_at(s, 10, 4, lin) for s in (0, 10, 20, 39, 40, 57)] == pytest.approx([0.1, 0.075, 0.05, 0.0025, 0, 0])
    floor = OptimConfig(lr=0.1, schedule="linear", warmup_epochs=1, min_lr=0.02)
    assert lr_at(0, 10, 5, floor) == pytest.approx(0.01) and lr_at(30, 10, 5, floor) == pytest.approx(0.06)
    assert lr_at(50, 10, 5, floor) == pytest.approx(0.02)
    one = OptimConfig(lr=0.1, schedule="onecycle")
    assert lr_at(0, 10, 10, one) == pytest.approx(0.004) and lr_at(30, 10, 10, one) == pytest.approx(0.1)
    assert lr_at(99, 10, 10, one) < 0.001


@pytest.mark.tf
def test_tensorboard_files_are_readable_by_tensorflow(tmp_path):
    import tensorflow as tf

    from clsf.run.tensorboard import ScalarWriter

    w = ScalarWriter(tmp_path)
    w.scalars(1, {"val_acc": 0.5, "lr": 0.001})
    w.scalars(2, {"val_acc": 0.75})
    w.close()
    got = [(e.step, v.tag, v.simple_value) for e in tf.compat.v1.train.summary_iterator(str(w.path)) for v in e.summary.value]
    assert got == [(1, "val_acc", 0.5), (1, "lr", pytest.approx(0.001)), (2, "val_acc", 0.75)]


@pytest.mark.torch
def test_early_stopping_stops_when_val_loss_stops_improving(tmp_path, monkeypatch):
    import clsf.engines.schedule as schedule

    real = schedule.lr_at
    # learning rate 0 after the first epoch: weights, and so val_loss, stay exactly the same
    monkeypatch.setattr("clsf.engines.torch_loop.lr_at",
                        lambda step, spe, epochs, o, *rest: real(step, spe, epochs, o, *rest) if step < spe else 0.0)
    run = train(_cfg("torch", tmp_path, "early_stop_patience=2", epochs=6), quiet=True)
    rows = rundir.read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1]["val_loss"] == rows[0]["val_loss"] == rows[2]["val_loss"]
    assert json.loads((run / "final.json").read_text())["epochs"] == 3
    assert rundir.checkpoint_meta(run, "best")["epoch"] == 1


@pytest.mark.torch
@pytest.mark.extra
def test_tensorboard_reads_a_runs_scalars_pictures_and_settings(tmp_path):
    """Read back by TensorBoard's own reader: per-epoch scalars, the confusion matrix and history
    pictures, and the resolved config on the HParams dashboard (the tensorboard extra)."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tensorboard]'")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata as hp_metadata

    run = train(_cfg("torch", tmp_path, "optim.lr=0.002", epochs=2), quiet=True)
    mux = EventMultiplexer({"run": str(run / "tb")}, size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    mux.Reload()
    tags = mux.Runs()["run"]
    assert {"val_acc", "train_loss", "lr"} <= set(tags["scalars"])
    assert [e.step for e in mux.Scalars("run", "val_acc")] == [1, 2]
    assert {"confusion_matrix", "history"} <= set(tags["images"])
    image = mux.Images("run", "confusion_matrix")[-1]
    assert image.step == 2 and image.width > 100 and image.encoded_image_string[:4] == b"\x89PNG"
    content = mux.PluginRunToTagToContent(hp_metadata.PLUGIN_NAME)["run"]
    start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.002)
    assert start.hparams["engine"].string_value == "torch" and start.hparams["model.name"].string_value == "seed-cnn"
