"""Every registered batch technique (clsf.techniques.BATCH), with each of its example settings, in
every framework against its numpy reference, and through every pipeline -- tests generated from the
registry, so a new technique is tested by registering it. Each comparison shows it has teeth: the
technique changes the batch, and the same realisation given another batch's plan differs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clsf.data.transforms import Preprocess
from clsf.techniques import BATCH
from clsf.techniques.loss import Loss

CASES = [pytest.param(t, id=f"{technique.key}-{name}") for technique in BATCH for name, t in technique.examples().items()]
FRAMEWORKS = [pytest.param("tf", marks=pytest.mark.tf), pytest.param("torch", marks=pytest.mark.torch)]
B, H, W, C, K = 6, 8, 8, 3, 6  # a batch of 6 images 8x8x3, 6 classes


def _batch(seed: int):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, H, W, C)).astype(np.float32), rng.permutation(K).astype(np.int64)  # normalised x, y


def _in(framework: str, t, x, y, part):
    """t's realisation in `framework` on the numpy batch, back as numpy (x NHWC)."""
    if framework == "tf":
        import tensorflow as tf

        xo, yo = t.tf(tf.constant(x), tf.constant(y), {k: tf.constant(v) for k, v in part.items()}, K)
        return xo.numpy(), yo.numpy()
    import torch

    xo, yo = t.torch(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y), part, K)
    return xo.permute(0, 2, 3, 1).numpy(), yo.numpy()


def test_the_registry_is_whole():
    """Each technique has a key, its own random stream, config fields the config knows, and examples."""
    from clsf.config import DataConfig

    keys, streams = [t.key for t in BATCH], [t.stream for t in BATCH]
    assert len(set(keys)) == len(keys) and len(set(streams)) == len(streams)
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    for t in BATCH:
        assert t.fields and set(t.fields) <= fields, t.key
        assert t.examples() and t.of(DataConfig()) is None, f"{t.key} must be off by default"


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("t", CASES)
def test_each_framework_realises_the_numpy_reference(t, framework):
    pytest.importorskip("tensorflow" if framework == "tf" else "torch")
    plan = t.plan(3 * B, B, seed=5, epoch=1, size=(H, W))
    changed = False
    for step in range(3):
        x, y = _batch(step)
        part = t.part(plan, step * B, (step + 1) * B, step)
        want_x, want_y = t.numpy(x.copy(), y, part, K)
        got_x, got_y = _in(framework, t, x, y, part)
        np.testing.assert_array_equal(got_x, want_x)
        np.testing.assert_array_equal(got_y, want_y if want_y.ndim == 2 else y)
        changed |= not np.array_equal(want_x, x)
        # teeth: another batch's plan gives another result, so a realisation that misread its plan would fail above
        other = t.part(plan, ((step + 1) % 3) * B, ((step + 1) % 3 + 1) * B, (step + 1) % 3)
        wrong_x, _ = _in(framework, t, x, y, other)
        assert not np.array_equal(wrong_x, want_x)
    assert changed, "the technique left every batch as it was"


def _epoch(pipeline: str, pre: Preprocess, x, y, epoch: int):
    """Every training batch of an epoch (x NHWC, y) from one pipeline, batches of 4."""
    if pipeline == "tf":
        from clsf.data.tf_pipeline import make_dataset

        return [(a.numpy(), b.numpy()) for a, b in make_dataset(x, y, 4, pre, training=True, seed=3, epoch=epoch, classes=K)]
    if pipeline == "torch":
        from clsf.data.torch_pipeline import Batches

        return [(a.permute(0, 2, 3, 1).numpy(), b.numpy())
                for a, b in Batches(x, y, 4, pre, training=True, seed=3, epoch=epoch, classes=K)]
    from clsf.data.numpy_pipeline import NumpyBatches

    nb = NumpyBatches(x, y, 4, pre, training=True, seed=3, epoch=epoch, classes=K)
    return [nb[i] for i in range(len(nb))]


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.parametrize("t", CASES)
def test_every_pipeline_applies_it_to_the_same_images_alike(t):
    """The tf.data, torch and numpy (Keras on JAX or torch) pipelines apply the technique to the same
    batches with the same plan, bit for bit (engine parity rests on it); without it they differ."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (10, H, W, C), dtype=np.uint8), np.arange(10, dtype=np.int64) % K
    pre = Preprocess("-1-1", crop_padding=2, hflip=True, batch=(t,))
    plain = dataclasses.replace(pre, batch=())
    changed = False
    for epoch in (0, 1):
        runs = [_epoch(p, pre, x, y, epoch) for p in ("tf", "torch", "numpy")]
        for (xt, yt), (xp, yp), (xn, yn), (x0, y0) in zip(*runs, _epoch("numpy", plain, x, y, epoch), strict=True):
            for xo, yo in ((xp, yp), (xn, yn)):
                np.testing.assert_array_equal(xo, xt)
                np.testing.assert_array_equal(yo, yt)
            assert yt.shape == ((len(y0), K) if t.soft_labels else y0.shape)
            changed |= not np.array_equal(xn, x0)
    assert changed


def test_the_mix_plan_follows_its_distributions():
    from clsf.data.order import epoch_plan
    from clsf.techniques.mixing import Mixing

    n, b = 64_000, 64
    up = Mixing(mixup=0.2).plan(n, b, 0, 0, (32, 32))
    assert not up["box"].any() and np.all(up["keep"] + up["other"] == 1)
    # Beta(0.2, 0.2): mostly near 0 or 1
    assert abs(up["keep"].mean() - 0.5) < 0.02 and (np.minimum(up["keep"], up["other"]) < 0.1).mean() > 0.5
    cut = Mixing(cutmix=1.0).plan(n, b, 0, 0, (32, 32))
    area = (cut["box"][:, 1] - cut["box"][:, 0]) * (cut["box"][:, 3] - cut["box"][:, 2])
    np.testing.assert_allclose(cut["keep"], 1 - area / 1024, rtol=1e-6)  # the label weight is the pasted area
    assert 0.6 < cut["keep"].mean() < 0.75  # Beta(1, 1) areas, clipped at the border: more of the own image stays
    both = Mixing(mixup=0.2, cutmix=1.0).plan(n, b, 0, 0, (32, 32))
    assert 0.45 < (both["box"][:, 1] > both["box"][:, 0]).mean() < 0.55
    # its own random stream: the epoch's order, crops and flips are those of the run without it
    a = epoch_plan(n, Preprocess(crop_padding=2, hflip=True), 0, 3)
    c = epoch_plan(n, Preprocess(crop_padding=2, hflip=True, batch=(Mixing(mixup=0.2),)), 0, 3)
    assert all(np.array_equal(getattr(a, k), getattr(c, k)) for k in ("order", "oy", "ox", "flip"))


def test_mixing_pairs_each_image_with_the_reverse_of_its_batch():
    from clsf.techniques.mixing import Mixing

    x, y = _batch(0)
    part = {"keep": np.float32(0.75), "other": np.float32(0.25), "box": np.zeros(4, np.int32)}
    out, soft = Mixing(mixup=1.0).numpy(x, y, part, K)
    np.testing.assert_allclose(out[0], 0.75 * x[0] + 0.25 * x[-1], rtol=1e-6)
    assert soft[0, y[0]] == 0.75 and soft[0, y[-1]] == 0.25 and np.allclose(soft.sum(1), 1)


def test_cutout_erases_one_square_of_its_side_clipped_at_the_border():
    from clsf.techniques.cutout import Cutout

    n, size = 4000, (8, 8)
    box = Cutout(4).plan(n, 100, 0, 0, size)["box"]
    sides = np.stack([box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]], 1)
    assert sides.min() >= 2 and sides.max() == 4  # centre on the image: at least half the side stays inside
    assert 0.3 < (sides == 4).all(1).mean() < 0.5  # whole squares where the centre is 2..5 rows and 2..6 columns in
    x, y = np.ones((n, *size, 3), np.float32), np.zeros(n, np.int64)
    out, labels = Cutout(4).numpy(x, y, {"box": box}, K)
    np.testing.assert_array_equal((out[..., 0] == 0).sum((1, 2)), sides.prod(1))  # exactly the box, nothing else
    assert (out[..., 1:] == out[..., :1]).all() and labels is y  # every channel; the labels untouched


@pytest.mark.torch
def test_a_cutout_run_trains(tmp_path):
    """data.cutout through a whole run and its config (the pipelines are compared above)."""
    import json

    from clsf.cli import main

    assert main(["train", "--engine", "torch", "--data", "synthetic:train=64,test=16,size=8x8x3,classes=2", "--epochs", "1",
                 "--runs-dir", str(tmp_path), "--run-name", "r", "--quiet", "model.args.widths=[4, 4]", "data.cutout=4",
                 "data.scale=standardize"]) == 0
    assert "cutout: 4" in (tmp_path / "r" / "config.yaml").read_text()
    assert json.loads((tmp_path / "r" / "final.json").read_text())["test_images"] == 16


# -- the loss: cross-entropy with label smoothing and class weights (clsf.techniques.loss) ----------

LOSSES = [pytest.param(name, id=name) for name in Loss.examples(K)]
LOSS_FRAMEWORKS = [pytest.param("keras", marks=pytest.mark.tf), pytest.param("torch", marks=pytest.mark.torch)]


def _loss_in(framework: str, loss: Loss, logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """loss's realisation in `framework`: its per-image losses (B,) and the batch's loss, as numpy."""
    soft = y.ndim == 2
    if framework == "keras":  # Keras on TensorFlow in this process; the engine tests run its other backends
        import keras

        z, t = keras.ops.convert_to_tensor(logits), keras.ops.convert_to_tensor(y)
        per = keras.ops.convert_to_numpy(loss.keras(soft, per_image=True)(t, z))
        return per, float(keras.ops.convert_to_numpy(loss.keras(soft)(t, z)))
    import torch

    per = loss.torch(torch.from_numpy(logits), torch.from_numpy(y))
    return per.numpy(), float(per.mean())


@pytest.mark.parametrize("labels", ["hard", "soft"])
@pytest.mark.parametrize("framework", LOSS_FRAMEWORKS)
@pytest.mark.parametrize("name", LOSSES)
def test_each_framework_realises_the_reference_loss(name, framework, labels):
    """Every example loss in Keras and torch against its numpy reference, per image and as the batch's
    mean (over the batch size, not the sum of its weights), on class labels and on soft rows; the
    teeth: each setting moves the reference off plain cross-entropy, so a realisation ignoring it fails."""
    pytest.importorskip("tensorflow" if framework == "keras" else "torch")
    loss = Loss.examples(K)[name]
    rng = np.random.default_rng(7)
    logits = (3 * rng.normal(size=(B, K))).astype(np.float32)
    y = rng.permutation(K).astype(np.int64)
    if labels == "soft":  # mixup's rows: two classes per image
        y = (0.7 * np.eye(K)[y] + 0.3 * np.eye(K)[y[::-1]]).astype(np.float32)
    want = loss.numpy(logits, y)
    per, mean = _loss_in(framework, loss, logits, y)
    np.testing.assert_allclose(per, want, rtol=2e-6)
    assert mean == pytest.approx(want.mean(), rel=2e-6)
    if name != "plain":
        assert not np.allclose(Loss(K).numpy(logits, y), want, rtol=1e-3)


def test_the_reference_loss_is_cross_entropy_weighed_over_the_batch_size():
    """The numpy reference by hand on one image of two classes, and a batch's weights: it is what
    the module says (Keras' sample weights), not torch's own division by the weights' sum."""
    z, s = np.array([[2.0, 0.0]]), 0.1
    p = np.exp(z[0]) / np.exp(z[0]).sum()
    want = -((1 - s / 2) * np.log(p[0]) + s / 2 * np.log(p[1]))
    assert Loss(2, s).numpy(z, np.array([0]))[0] == pytest.approx(want, rel=1e-12)
    w = Loss(2, 0.0, [1.0, 3.0])
    zz, yy = np.zeros((2, 2)), np.array([0, 1])
    assert w.numpy(zz, yy).mean() == pytest.approx(2 * np.log(2))  # (1 + 3) / 2 * log 2, not (1 + 3) / 4 * ...
    assert w.numpy(zz, np.array([[0.5, 0.5], [0.0, 1.0]])).tolist() == pytest.approx([2 * np.log(2), 3 * np.log(2)])
