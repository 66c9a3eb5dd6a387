"""Models defined in YAML files: every registry model round-trips through one, each mistake is one
line naming the layer, and a run reloads without the file it was built from."""

import json

import pytest
import yaml

from clsf.cli import main
from clsf.models.spec import param_count
from clsf.models.yaml_spec import spec_from_dict, spec_to_yaml
from clsf.models.zoo import get_spec, names

DATA = "synthetic:train=120,test=40,size=12x12x3,classes=3"


@pytest.mark.parametrize("name", names())
def test_every_registry_model_round_trips_through_yaml(name):
    spec = get_spec(name)
    pinned = spec_from_dict(yaml.safe_load(spec_to_yaml(spec, follow_data=False)), "x.yaml")
    assert pinned == spec
    classes = spec.layers[-1].units if spec.kind == "classifier" else None
    following = spec_from_dict(yaml.safe_load(spec_to_yaml(spec)), "x.yaml", classes, spec.input_shape)
    assert following == spec


def test_show_prints_a_file_that_trains_like_the_registry_model(tmp_path, capsys):
    assert main(["models", "show", "seed-cnn", "--yaml"]) == 0
    text = capsys.readouterr().out
    assert "units: num_classes" in text and "input_shape" not in text  # both follow the data
    f = tmp_path / "mine.yaml"
    f.write_text(text)
    spec = get_spec(str(f), 10, (32, 32, 3))
    assert param_count(spec) == 430_102 and spec == get_spec("seed-cnn")
    assert param_count(get_spec(str(f), 5, (28, 28, 1))) == param_count(get_spec("seed-cnn", 5, (28, 28, 1)))


@pytest.mark.parametrize("layers,message", [
    ("[{type: konv, filters: 3}]", "layer 1: unknown layer type 'konv'; did you mean 'conv'?"),
    ("[{type: conv, name: c1, filter: 3}]", "layer 1 (conv 'c1'): unknown argument 'filter'; did you mean 'filters'?"),
    ("[{type: conv}]", "layer 1 (conv 'conv1'): missing argument 'filters'"),
    ("[{type: conv, filters: three}]", "layer 1 (conv 'conv1'): filters expects int, got 'three'"),
    ("[{type: dense, units: 4}]", "layer 'dense1': Dense needs a flat input, got (12, 12, 3); add Flatten or global pooling"),
    ("[{type: flatten}, {type: dense, units: 4}]", "outputs (4,) but the data has 3 classes; give its last layer units: num_classes"),
    ("[{type: conv, filters: 3, activation: sparkle}]", "activation 'sparkle' is not known"),
    ("[{type: residual, name: r, body: [{type: conv, filters: 8}]}]",
     "block 'r': body gives (12, 12, 8) but shortcut gives (12, 12, 3); add a projection"),
    ("[{type: reshape, shape: [2, 2]}, {type: flatten}]", "cannot reshape (12, 12, 3) to (2, 2)"),
    ("[!!python/object/apply:os.system [touch pwned]]", "holds a tag clsf will not construct"),
    ("{type: conv}", "expects a non-empty list of layers"),
])
def test_model_file_mistakes_are_one_line_exit_2(tmp_path, capsys, monkeypatch, layers, message):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "net.yaml"
    f.write_text(f"layers: {layers}\n")
    assert main(["train", "--engine", "torch", "--model", str(f), "--data", DATA, "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "pwned").exists()


def test_model_file_top_level_mistakes(tmp_path):
    f = tmp_path / "net.yaml"
    for text, message in (("layer: []", "unknown key 'layer'; did you mean 'layers'?"),
                          ("input_shape: [28, 28, 1]\nlayers: [{type: flatten}, {type: dense, units: num_classes}]",
                           "declares input_shape [28, 28, 1] but the data's images are 12x12x3"),
                          ("- 1", "a model file holds a mapping")):
        f.write_text(text)
        with pytest.raises(Exception, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
            get_spec(str(f), 3, (12, 12, 3))
    with pytest.raises(Exception, match="apply to registered models"):
        get_spec(str(f), 3, (12, 12, 3), dropout=0.5)


@pytest.mark.torch
def test_a_run_reloads_without_its_model_file(tmp_path, capsys):
    f = tmp_path / "net.yaml"
    f.write_text("layers:\n  - {type: conv, filters: 4, activation: relu}\n  - {type: global_avg_pool}\n"
                 "  - {type: dense, name: out, units: num_classes}\n")
    common = ["--engine", "torch", "--data", DATA, "--runs-dir", str(tmp_path), "--quiet"]
    assert main(["train", "--model", str(f), "--run-name", "r", "--epochs", "1", *common]) == 0
    run = tmp_path / "r"
    saved = yaml.safe_load((run / "model.yaml").read_text())
    assert saved["input_shape"] == [12, 12, 3] and saved["layers"][-1]["units"] == 3  # pinned, not placeholders
    f.unlink()  # the original file is gone: evaluate and resume use the run's model.yaml
    final = json.loads((run / "final.json").read_text())
    assert main(["evaluate", str(run)]) == 0
    assert f"test_acc {final['test_acc']:.4f}" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert json.loads((run / "final.json").read_text())["epochs"] == 2
