"""model.whiten_init: the first convolution set to the patch whitening of the training images —
the same bits in every engine, and outputs on training patches that are in fact decorrelated."""

from __future__ import annotations

import numpy as np
import pytest

from clsf.data.transforms import Preprocess, normalize_np
from clsf.errors import UserError
from helpers import engine_params, long

DATA = "synthetic:train=96,test=16,size=12x12x3,classes=3"
AIRBENCH = ["--model", "airbench"]


def _images(n=200, seed=0) -> np.ndarray:
    """Images with strongly correlated neighbouring pixels and channels (as photographs have)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 13, 13, 1))
    smooth = (base[:, :-1, :-1] + base[:, 1:, :-1] + base[:, :-1, 1:] + base[:, 1:, 1:]) / 4  # (n, 12, 12, 1)
    x = 128 + 40 * smooth + rng.normal(scale=6, size=(n, 12, 12, 3))
    return np.clip(x, 0, 255).astype(np.uint8)


def _patch_covariance(x: np.ndarray, kernel: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Covariance (uncentred, as the init's) of the conv's outputs on every 2x2 patch."""
    f = normalize_np(x, pre).astype(np.float64)
    p = np.lib.stride_tricks.sliding_window_view(f, (2, 2), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12)
    out = p @ kernel.reshape(12, -1)  # (patches, filters)
    return out.T @ out / len(out)


def test_the_whitened_patches_are_decorrelated_with_unit_variance():
    from clsf.techniques.whitening import whitening_kernel

    x, pre = _images(), Preprocess(scale="0-1")
    w = whitening_kernel(x, pre, kernel=2, filters=24)
    assert w.shape == (2, 2, 3, 24)
    np.testing.assert_allclose(w[..., 12:], -w[..., :12])  # airbench's +v / -v pairs
    cov = _patch_covariance(x, w[..., :12], pre)
    eigen = np.linalg.eigvalsh(cov)
    # unit variance in every direction the data has (eps = 5e-4 shrinks only the tiniest: l / (l + eps))
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-6
    assert 0.5 < eigen.min() and eigen.max() < 1.0 + 1e-6
    # teeth: the same images through a random kernel of the same scale are far from it
    rng = np.random.default_rng(1)
    raw = _patch_covariance(x, rng.normal(scale=np.abs(w).mean(), size=w[..., :12].shape), pre)
    assert np.abs(raw - np.diag(np.diag(raw))).max() > 0.1


@pytest.mark.parametrize("engine", long(engine_params(), "keras"))
def test_every_engine_starts_from_the_same_whitening(engine, tmp_path):
    """The run's checkpoints/init holds, in each engine, exactly the numpy whitening of its training
    images; without the key the first convolution is an ordinary random init (the key changes it)."""
    from clsf.cli import main
    from clsf.data import load_dataset
    from clsf.models.transfer import load_npz
    from clsf.techniques.whitening import whitening_kernel

    args = ["train", "--engine", engine, "--data", DATA, "--epochs", "1", "--runs-dir", str(tmp_path), "--quiet", *AIRBENCH]
    small = ["model.args.widths=[4, 4, 4]", "data.val_split=0"]
    assert main([*args, "--run-name", "white", *small, "model.whiten_init=true"]) == 0
    assert main([*args, "--run-name", "plain", *small]) == 0
    white = load_npz(tmp_path / "white/checkpoints/init/weights.npz")["whiten"]
    plain = load_npz(tmp_path / "plain/checkpoints/init/weights.npz")["whiten"]
    ds = load_dataset(DATA)
    want = whitening_kernel(ds.splits["train"].x, Preprocess(scale="0-1"), kernel=2, filters=24)
    np.testing.assert_array_equal(white["kernel"], want)
    np.testing.assert_array_equal(white["bias"], np.zeros(24, np.float32))
    assert np.abs(plain["kernel"] - want).max() > 0.1


def test_a_model_it_cannot_whiten_is_refused_in_one_line():
    from clsf.models.zoo import get_spec
    from clsf.techniques.whitening import first_conv

    with pytest.raises(UserError, match="has 32 filters; whitening 3x3x3 patches needs 27 or 54"):
        first_conv(get_spec("seed-cnn", 10, (32, 32, 3)))
    with pytest.raises(UserError, match="needs a first convolution"):
        first_conv(get_spec("mnist-mlp", 10, (28, 28, 1)))
