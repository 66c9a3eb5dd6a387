"""The tf.data and torch pipelines give the same normalisation and the same augmentation meaning
as the numpy reference in clsf.data.transforms."""

import numpy as np
import pytest

from clsf.data.transforms import Preprocess, channel_stats, normalize_np
from clsf.techniques import crop_flip
from clsf.errors import UserError

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
Y = np.arange(6, dtype=np.int64)
PAD = 2
OY, OX = RNG.integers(0, 2 * PAD + 1, 6), RNG.integers(0, 2 * PAD + 1, 6)
FLIP = np.array([True, False, True, True, False, False])
SCALES = [Preprocess("0-1"), Preprocess("-1-1"), Preprocess("standardize", [0.4, 0.5, 0.6], [0.2, 0.25, 0.3])]


def test_reference_normalisation_values():
    assert normalize_np(np.array([[[[0, 255, 51]]]], np.uint8), Preprocess("0-1")).ravel().tolist() == pytest.approx([0, 1, 0.2])
    assert normalize_np(np.array([[[[0, 255, 0]]]], np.uint8), Preprocess("-1-1")).ravel().tolist() == pytest.approx([-1, 1, -1])
    mean, std = channel_stats(X)
    z = normalize_np(X, Preprocess("standardize", mean, std))
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1, atol=1e-4)
    with pytest.raises(UserError):
        Preprocess("0-255").validate()


def test_reference_crop_flip_is_a_shifted_window():
    out = crop_flip.numpy(X.astype(np.float32), PAD, OY, OX, FLIP)
    i = 1  # not flipped: the window of the padded image at (OY, OX)
    padded = np.pad(X[i].astype(np.float32), ((PAD, PAD), (PAD, PAD), (0, 0)))
    np.testing.assert_array_equal(out[i], padded[OY[i]:OY[i] + 8, OX[i]:OX[i] + 8])
    np.testing.assert_array_equal(crop_flip.numpy(X.astype(np.float32), 0, np.zeros(6, int), np.zeros(6, int), FLIP)[0], X[0, :, ::-1])


@pytest.mark.tf
def test_tf_crop_flip_matches_reference():
    tf = pytest.importorskip("tensorflow")

    got = crop_flip.tf(tf.constant(X, tf.float32), PAD, tf.constant(OY, tf.int32), tf.constant(OX, tf.int32), tf.constant(FLIP))
    np.testing.assert_array_equal(got.numpy(), crop_flip.numpy(X.astype(np.float32), PAD, OY, OX, FLIP))


@pytest.mark.torch
def test_torch_crop_flip_matches_reference():
    torch = pytest.importorskip("torch")

    got = crop_flip.torch(torch.from_numpy(X).permute(0, 3, 1, 2).float(), PAD, torch.from_numpy(OY), torch.from_numpy(OX), torch.from_numpy(FLIP))
    np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), crop_flip.numpy(X.astype(np.float32), PAD, OY, OX, FLIP))


@pytest.mark.tf
@pytest.mark.parametrize("pre", SCALES, ids=lambda p: p.scale)
def test_tf_eval_pipeline_normalises_like_reference(pre):
    pytest.importorskip("tensorflow")
    from clsf.data.tf_pipeline import make_dataset

    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in make_dataset(X, Y, 4, pre, training=False)])
    assert [len(b) for b in ys] == [4, 2]  # the last partial batch is kept
    np.testing.assert_allclose(np.concatenate(xs), normalize_np(X, pre), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(ys), Y)


@pytest.mark.tf
def test_tf_pipelines_leave_autotuning_off():
    """tf.data's autotuning thread held an epoch's iterator up to 60 s at its end, the CPU idle
    (bench/results/observations.md, O15; `python bench/tf_data_autotune.py` shows the wait)."""
    pytest.importorskip("tensorflow")
    from clsf.data.tf_pipeline import make_dataset, make_replica_dataset

    pre = Preprocess("0-1", crop_padding=2, hflip=True)
    pipelines = {"training": make_dataset(X, Y, 4, pre, training=True, classes=6),
                 "evaluation": make_dataset(X, Y, 4, pre, training=False),
                 "replicas": make_replica_dataset(X, Y, 2, pre, 0, 0, 0, range(0, 1), 2)}
    assert {name: ds.options().autotune.enabled for name, ds in pipelines.items()} == dict.fromkeys(pipelines, False)


@pytest.mark.torch
@pytest.mark.parametrize("pre", SCALES, ids=lambda p: p.scale)
def test_torch_eval_pipeline_normalises_like_reference(pre):
    pytest.importorskip("torch")
    from clsf.data.torch_pipeline import Batches

    batches = list(Batches(X, Y, 4, pre, training=False))
    x = np.concatenate([b[0].permute(0, 2, 3, 1).numpy() for b in batches])
    np.testing.assert_allclose(x, normalize_np(X, pre), rtol=1e-6, atol=1e-6)


def _train_epoch_tf(seed, epoch, pre):
    from clsf.data.tf_pipeline import make_dataset

    return [(a.numpy(), b.numpy()) for a, b in make_dataset(X, Y, 4, pre, training=True, seed=seed, epoch=epoch, classes=6)]


def _train_epoch_torch(seed, epoch, pre):
    from clsf.data.torch_pipeline import Batches

    return [(a.numpy(), b.numpy()) for a, b in Batches(X, Y, 4, pre, training=True, seed=seed, epoch=epoch, classes=6)]


@pytest.mark.parametrize("framework", [pytest.param("tf", marks=pytest.mark.tf), pytest.param("torch", marks=pytest.mark.torch)])
def test_training_order_and_augmentation_are_seeded_per_epoch(framework):
    pytest.importorskip("tensorflow" if framework == "tf" else "torch")
    run = _train_epoch_tf if framework == "tf" else _train_epoch_torch
    pre = Preprocess("0-1", crop_padding=2, hflip=True)
    a, b, c = run(1, 3, pre), run(1, 3, pre), run(1, 4, pre)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert sorted(np.concatenate([y for _, y in a]).tolist()) == Y.tolist()  # a permutation
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))  # another epoch differs
    # every augmented image is a flipped or unflipped window of its zero-padded original
    for xb, yb in a:
        for img, label in zip(xb, yb):
            img = img if img.shape[-1] == 3 else img.transpose(1, 2, 0)
            p = np.pad(X[label] / 255.0, ((2, 2), (2, 2), (0, 0)))
            windows = [p[i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
            assert any(np.allclose(img, w, atol=1e-6) or np.allclose(img, w[:, ::-1], atol=1e-6) for w in windows)


@pytest.mark.parametrize("framework", [pytest.param("tf", marks=pytest.mark.tf), pytest.param("torch", marks=pytest.mark.torch)])
def test_class_sorted_data_gives_mixed_batches(framework):
    """A small shuffle buffer over class-sorted data yields one-class batches; ours must not."""
    pytest.importorskip("tensorflow" if framework == "tf" else "torch")
    x = np.zeros((4000, 2, 2, 1), np.uint8)
    y = np.repeat(np.arange(10), 400)  # sorted, as the CIFAR JPEG folders are
    if framework == "tf":
        from clsf.data.tf_pipeline import make_dataset

        first = next(iter(make_dataset(x, y, 64, Preprocess(), training=True)))[1].numpy()
    else:
        from clsf.data.torch_pipeline import Batches

        first = next(iter(Batches(x, y, 64, Preprocess(), training=True)))[1].numpy()
    assert len(np.unique(first)) >= 8


def _train_epoch_numpy(seed, epoch, pre):
    from clsf.data.numpy_pipeline import NumpyBatches

    b = NumpyBatches(X, Y, 4, pre, training=True, seed=seed, epoch=epoch, classes=6)
    return [b[i] for i in range(len(b))]


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.parametrize("alternate", [False, True], ids=["random-flips", "alternating-flips"])
def test_every_pipeline_trains_on_the_same_batches(alternate):
    """One numpy plan: the same order, crops and flips in the tf.data, torch and numpy (Keras on JAX
    or torch) pipelines; engine parity rests on it."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("torch")
    pre = Preprocess("-1-1", crop_padding=2, hflip=True, hflip_alternate=alternate)
    for epoch in (1, 2):
        tf_, torch_, np_ = _train_epoch_tf(3, epoch, pre), _train_epoch_torch(3, epoch, pre), _train_epoch_numpy(3, epoch, pre)
        for (xt, yt), (xp, yp), (xn, yn) in zip(tf_, torch_, np_, strict=True):
            np.testing.assert_array_equal(yt, yp)
            np.testing.assert_array_equal(yt, yn)
            np.testing.assert_allclose(xt, xp.transpose(0, 2, 3, 1), atol=1e-6)
            np.testing.assert_allclose(xt, xn, atol=1e-6)


def test_alternating_flips_mirror_each_image_in_exactly_one_of_two_epochs():
    from clsf.data.order import epoch_plan

    n = 1000
    pre = Preprocess(crop_padding=2, hflip=True, hflip_alternate=True)

    def by_image(plan):  # (N,) bool indexed by image, not by position in the epoch's order
        out = np.empty(n, bool)
        out[plan.order] = plan.flip
        return out

    flips = [by_image(epoch_plan(n, pre, 7, e)) for e in range(4)]
    assert 0.45 < flips[0].mean() < 0.55  # random in the first epoch
    for a, b in zip(flips, flips[1:]):
        assert (a ^ b).all()  # then negated every epoch: each image is seen both ways in any two epochs
    a, b = (epoch_plan(n, pre, 7, e) for e in (1, 2))
    assert not np.array_equal(a.order, b.order) and not np.array_equal(a.oy, b.oy)  # order and crops stay random
    # turning it off: flips drawn anew, so about half the images keep last epoch's flip
    plain = Preprocess(crop_padding=2, hflip=True)
    same = (by_image(epoch_plan(n, plain, 7, 0)) == by_image(epoch_plan(n, plain, 7, 1))).mean()
    assert 0.4 < same < 0.6
    assert not epoch_plan(n, Preprocess(crop_padding=2), 7, 0).flip.any()  # no hflip: no flips
    with pytest.raises(UserError, match="data.hflip=true too"):
        Preprocess(hflip_alternate=True).validate()


@pytest.mark.torch
def test_torch_batches_from_a_resident_tensor_equal_those_from_numpy():
    """A GPU run hands Batches the split as a device tensor; the batches must be the numpy path's."""
    torch = pytest.importorskip("torch")
    from clsf.data.torch_pipeline import Batches

    pre = Preprocess("0-1", crop_padding=2, hflip=True)
    a = Batches(X, Y, 4, pre, training=True, seed=1, epoch=2)
    b = Batches(torch.from_numpy(X).clone(), torch.from_numpy(Y).clone(), 4, pre, training=True, seed=1, epoch=2)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
