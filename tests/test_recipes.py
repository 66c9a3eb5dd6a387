"""Named recipes (--recipe NAME, files in clsf/recipes) and flip-averaged evaluation (tta_flip)."""

import numpy as np
import pytest

from clsf.cli import main
from clsf.config import Config, build_config
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
    assert "recipe 'fastest' is not known; use one of fast-cifar, fast-seed-cnn, seed" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.torch
@pytest.mark.parametrize("recipe", names())
def test_every_recipe_trains(tmp_path, recipe):
    assert main(["train", "--recipe", recipe, "--engine", "torch", "--data", TINY, "--epochs", "1", "--runs-dir", str(tmp_path),
                 "--run-name", "r", "--quiet", "model.args.widths=[8, 8]" if recipe != "fast-cifar" else "model.args.widths=[8, 8, 8]"]) == 0
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
