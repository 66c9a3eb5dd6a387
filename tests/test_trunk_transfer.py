"""Trunk transfer (the seeds' shared trunk with a new head): --init-from loads every layer but the
head from a run of either framework; --freeze trunk keeps those weights to the bit (batch-norm
statistics included), in every engine; without it they train."""

import numpy as np
import pytest

from clsf.cli import main
from clsf.models.transfer import load_npz
from helpers import long

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
    assert "freeze=trunk keeps the weights init_from or model.pretrained loads" in capsys.readouterr().err
    assert main([*base, "--init-from", str(source), "model.args.widths=[4, 4]"]) == 2  # seed-cnn from a resnet run
    assert "do not fit model 'seed-cnn' (all but the head 'logits')" in capsys.readouterr().err
    assert main([*base, *RESNET, f"init_from={source}"]) == 2  # the whole model, head included: 3 classes vs 4
    assert "do not fit model 'resnet-s'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())



# what breaks an unfreeze: Adam's bias correction counted afresh for the unfrozen layers (torch's
# own Adam counts per parameter; Keras counts optimizer steps), or a traced step kept as it was
# traced, which still updates only the head's variables
SABOTAGE = {
    "adam-count-restarts": ("clsf.engines.torch_loop.TorchEngine.unfreeze",
                            lambda self: (self.freeze_trunk(False), self.optimizer.param_groups[0].update(iterations=0))),
    "traced-step-kept": ("clsf.engines.keras_common.KerasBase.unfreeze", lambda self: self.freeze_trunk(False)),
}


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.parametrize("sabotage", [None, *(pytest.param(s, marks=pytest.mark.long) for s in SABOTAGE)])  # teeth: -m long
def test_unfreeze_after_trains_the_whole_network_alike_in_every_engine(source, tmp_path, sabotage, monkeypatch):
    """--unfreeze-after 1: epoch 1 trains the head alone, epoch 2 every layer. From the same weights
    (init_from keeps the head: same classes) the three engines end where the parity test says."""
    if sabotage:
        monkeypatch.setattr(*SABOTAGE[sabotage])
    for engine in ("keras", "tf", "torch"):
        assert main(["train", "--engine", engine, "--data", SRC, "--epochs", "2", "--runs-dir", str(tmp_path),
                     "--run-name", engine, "--quiet", "--freeze", "trunk", "--unfreeze-after", "1", *RESNET,
                     f"init_from={source}", "optim.name=adam"]) == 0
    w = {e: _weights(tmp_path / e, "last") for e in ("keras", "tf", "torch")}
    init = _weights(tmp_path / "keras", "init")
    try:
        for layer, tensors in w["keras"].items():
            for k, a in tensors.items():
                assert not np.array_equal(a, init[layer][k]), f"{layer}.{k} never trained"
                assert np.abs(a - w["tf"][layer][k]).max() <= 1e-6, f"keras vs tf: {layer}.{k}"
                assert np.linalg.norm(a - w["torch"][layer][k]) <= 1e-4 * np.linalg.norm(a), f"keras vs torch: {layer}.{k}"
    except AssertionError:
        if sabotage:
            return  # the test saw the sabotage
        raise
    assert not sabotage, f"{sabotage} went unnoticed"


@pytest.mark.parametrize("engine", long([pytest.param("keras", marks=pytest.mark.tf), pytest.param("torch", marks=pytest.mark.torch)], "keras"))
def test_unfreeze_after_keeps_the_trunk_for_n_epochs_and_resumes_across_the_switch(source, tmp_path, engine):
    from clsf import build_config, train

    def cfg(name):
        return build_config(flags={"engine": engine, "epochs": 3, "runs_dir": str(tmp_path), "run_name": name},
                            overrides=["model.name=resnet-s", "model.args.widths=[4, 8, 8]", "model.args.blocks=1",
                                       f"data.name={NEW}", f"init_from={source}", "init_head=false", "freeze=trunk",
                                       "unfreeze_after=2", "optim.name=adam"])

    whole = train(cfg("whole"), quiet=True)
    cut = train(cfg("cut"), quiet=True, stop_after=2)  # the trunk's last frozen epoch
    init, frozen = _weights(cut, "init"), _weights(cut, "last")
    trunk = [layer for layer in init if layer != "logits"]
    assert all(np.array_equal(init[l][k], frozen[l][k]) for l in trunk for k in init[l])
    train(resume=cut, quiet=True)  # a new process would unfreeze at the same epoch
    a, b = _weights(whole, "last"), _weights(cut, "last")
    assert all(np.array_equal(a[l][k], b[l][k]) for l in a for k in a[l])
    assert not np.array_equal(a["stem"]["kernel"], init["stem"]["kernel"])


def test_unfreeze_after_needs_a_frozen_trunk(tmp_path, capsys):
    assert main(["train", "--data", NEW, "--runs-dir", str(tmp_path), "--unfreeze-after", "1"]) == 2
    assert "unfreeze_after=1 needs freeze=trunk" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
