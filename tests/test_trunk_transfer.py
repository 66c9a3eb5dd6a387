"""Trunk transfer (the seeds' shared trunk with a new head): --init-from loads every layer but the
head from a run of either framework; --freeze trunk keeps those weights to the bit (batch-norm
statistics included), in every engine; without it they train."""

import numpy as np
import pytest

from clsf.cli import main
from clsf.models.transfer import load_npz

SRC = "synthetic:train=150,test=30,size=10x10x3,classes=3"
NEW = "synthetic:train=150,test=30,size=10x10x3,classes=4,seed=3"  # other data, another class count
RESNET = ["--model", "resnet-s", "model.args.widths=[4, 8, 8]", "model.args.blocks=1"]  # batch norm in the trunk


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("src")
    assert main(["train", "--engine", "torch", "--data", SRC, "--epochs", "1", "--runs-dir", str(root), "--run-name", "src",
                 "--quiet", *RESNET]) == 0
    return root / "src"


def _weights(run, which):
    return load_npz(run / "checkpoints" / which / "weights.npz")


@pytest.mark.parametrize("engine", [pytest.param("keras", marks=pytest.mark.tf), pytest.param("tf", marks=pytest.mark.tf),
                                    pytest.param("torch", marks=pytest.mark.torch)])
def test_a_frozen_trunk_does_not_change_by_a_bit(source, tmp_path, engine):
    common = ["train", "--engine", engine, "--data", NEW, "--epochs", "2", "--runs-dir", str(tmp_path), "--quiet",
              "--init-from", str(source), *RESNET, "optim.name=adam"]
    assert main([*common, "--run-name", "frozen", "--freeze", "trunk"]) == 0
    assert main([*common, "--run-name", "free"]) == 0
    src = _weights(source, "last")
    trunk = [layer for layer in src if layer != "logits"]
    for run in ("frozen", "free"):
        init = _weights(tmp_path / run, "init")
        assert all(np.array_equal(init[l][k], src[l][k]) for l in trunk for k in src[l])  # the trunk came over
        assert init["logits"]["kernel"].shape == (8, 4) != src["logits"]["kernel"].shape  # a new head
    init, last = _weights(tmp_path / "frozen", "init"), _weights(tmp_path / "frozen", "last")
    assert all(np.array_equal(init[l][k], last[l][k]) for l in trunk for k in init[l])  # moving statistics too
    assert not np.array_equal(init["logits"]["kernel"], last["logits"]["kernel"])
    free_init, free_last = _weights(tmp_path / "free", "init"), _weights(tmp_path / "free", "last")
    assert not np.array_equal(free_init["stem"]["kernel"], free_last["stem"]["kernel"])  # teeth: unfrozen, it trains
    assert not np.array_equal(free_init["stem_bn"]["moving_mean"], free_last["stem_bn"]["moving_mean"])


def test_transfer_mistakes(source, tmp_path, capsys):
    base = ["train", "--engine", "torch", "--data", NEW, "--epochs", "1", "--runs-dir", str(tmp_path), "--quiet"]
    assert main([*base, "--freeze", "trunk"]) == 2
    assert "freeze=trunk keeps the weights init_from loads" in capsys.readouterr().err
    assert main([*base, "--init-from", str(source), "model.args.widths=[4, 4]"]) == 2  # seed-cnn from a resnet run
    assert "do not fit model 'seed-cnn' (all but the head 'logits')" in capsys.readouterr().err
    assert main([*base, *RESNET, f"init_from={source}"]) == 2  # the whole model, head included: 3 classes vs 4
    assert "do not fit model 'resnet-s'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
