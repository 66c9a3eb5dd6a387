"""clsf export: every format from a run of either framework, verified against clsf when written (and
refused when it does not match); predict from runs and exports alike; files that would run code refused."""

import json
import pickle

import numpy as np
import pytest

from clsf.cli import main
from helpers import png_bytes

pytestmark = [pytest.mark.tf, pytest.mark.torch]
DATA = "synthetic:train=120,test=40,size=12x12x3,classes=3"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for engine in ("torch", "keras"):  # standardize: the run's mean/std must travel into the export
        assert main(["train", "--engine", engine, "--data", DATA, "--epochs", "1", "--runs-dir", str(root), "--run-name",
                     engine, "--quiet", "model.args.widths=[4, 4]", "model.args.dense=8", "data.scale=standardize"]) == 0
    return root


def _images(folder, n=5):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):  # other sizes than the model's 12x12: predict resizes
        (folder / f"{i}.png").write_bytes(png_bytes(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)))
    return folder


def _predict_json(capsys, *argv):
    assert main(["predict", *argv, "--format", "json", "--top-k", "3"]) == 0
    return {r["path"]: {t["class"]: t["p"] for t in r["top"]} for r in json.loads(capsys.readouterr().out)}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "savedmodel", "keras"])
@pytest.mark.parametrize("trained", ["torch", "keras"])
def test_export_is_verified_and_predicts_like_the_run(runs, tmp_path, capsys, fmt, trained):
    run, out = runs / trained, tmp_path / fmt
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}") and "same prediction 100.00%" in said
    info = json.loads((out / "clsf.json").read_text())
    assert info["verified"]["max_abs_diff"] <= 1e-4 and info["output"] == "logits" and info["trained_with"] == trained
    images = _images(tmp_path / "img")
    from_run = _predict_json(capsys, str(run), str(images), "--checkpoint", "last")
    from_export = _predict_json(capsys, str(out), str(images))
    assert from_run.keys() == from_export.keys()
    for path, top in from_run.items():
        assert list(top) == list(from_export[path])  # same classes, same order
        assert np.allclose(list(top.values()), list(from_export[path].values()), atol=1e-4)


AIRBENCH94 = ["model.name=airbench", "model.args.widths=[8, 8]", "model.args.stem=12", "model.args.bn_scale=false",
              "model.args.bias_scale=8.0", "model.args.dirac=true", "model.args.whiten_frozen=true",
              "model.args.logit_scale=0.111"]


@pytest.fixture(scope="module")
def airbench_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("airbench")
    assert main(["train", "--engine", "torch", "--data", DATA, "--epochs", "1", "--runs-dir", str(root), "--run-name", "a",
                 "--quiet", *AIRBENCH94]) == 0
    return root / "a"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "savedmodel", "keras"])
def test_airbench94_network_options_export_in_every_format(airbench_run, tmp_path, capsys, fmt):
    """The scaled-bias batch norm (a Keras layer of clsf's, saved and reloaded in safe mode), the
    scale layer and the scale-free batch norm survive every format and verify against the run. The
    SavedModel holds TensorFlow's own gelu, not the tf engines' XLA-compiled one (tf_kernels.gelu),
    which a serving runtime would have to compile (before keras_own_gelu: 14 such calls here)."""
    out = tmp_path / fmt
    assert main(["export", str(airbench_run), "--format", fmt, "--out", str(out)]) == 0
    assert "same prediction 100.00%" in capsys.readouterr().out
    assert json.loads((out / "clsf.json").read_text())["verified"]["max_abs_diff"] <= 1e-4
    if fmt == "savedmodel":
        assert b"_XlaMustCompile" not in (out / "saved_model" / "saved_model.pb").read_bytes()


def test_probabilities_are_baked_in_on_request(runs, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["export", str(runs / "torch"), "--format", "torchscript", "--out", str(out), "--probabilities"]) == 0
    import torch

    m = torch.jit.load(str(out / "model.pt"))
    p = m(torch.rand(4, 12, 12, 3) * 255).detach().numpy()
    assert np.allclose(p.sum(1), 1, atol=1e-5) and (p >= 0).all()
    assert json.loads((out / "clsf.json").read_text())["output"] == "probabilities"


def test_a_wrong_export_is_refused_and_nothing_is_written(runs, tmp_path, monkeypatch, capsys):
    """The verification's teeth: leave the normalisation's offset out of the exported graph and the
    export is refused."""
    import clsf.engines.torch_loop as torch_loop

    real = torch_loop._Exported
    monkeypatch.setattr(torch_loop, "_Exported", lambda net, a, b, p: real(net, a, 0 * b, p))
    out = tmp_path / "bad"
    assert main(["export", str(runs / "torch"), "--format", "onnx", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "the onnx export differs from clsf by" in err and "nothing was written" in err and err.count("\n") == 0
    assert not out.exists() and not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_full_disk_during_export_is_exit_5_with_nothing_left(runs, tmp_path, monkeypatch, capsys, fmt):
    """TorchScript is serialised in memory and written by Python (torch's own C++ writer aborted the
    process on a full disk); the disk fills halfway through the model file."""
    import errno
    import pathlib

    real_write, real_open = pathlib.Path.write_bytes, open

    def half_then_full(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(file, mode="r", *a, **k):
        if "w" in str(mode) and str(file).endswith("model.onnx"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_full)
    monkeypatch.setattr("builtins.open", full_open)
    out = tmp_path / fmt
    assert main(["export", str(runs / "torch"), "--format", fmt, "--out", str(out)]) == 5
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is full; free space and export again (nothing was written)" in err
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_export_and_predict_bad_input(runs, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2  # not a run
    assert "is not a clsf run directory" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    assert main(["export", str(runs / "torch"), "--format", "keras", "--out", str(tmp_path / "taken")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    images = _images(tmp_path / "img", 2)
    (images / "broken.jpg").write_bytes(b"not an image")
    assert main(["predict", str(runs / "torch"), str(images)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot read image" in err and "not a PNG, JPEG or BMP image" in err and "--skip-bad" in err
    assert main(["predict", str(runs / "torch"), str(images), "--skip-bad", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 3 and "skipped" in err and "broken.jpg" in err
    assert main(["predict", str(runs / "torch"), str(tmp_path / "nothing*.png")]) == 2
    assert main(["predict", str(runs / "torch"), str(images / "*.png")]) == 0  # a quoted glob
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


class _Payload:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned",)


def test_files_that_would_run_code_are_refused(runs, tmp_path, capsys, monkeypatch):
    import shutil

    import keras

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(runs / "torch", run)
    # a pickle in the torch training state: torch's weights_only loader refuses it
    (run / "checkpoints" / "last" / "state.pt").write_bytes(pickle.dumps({"model": _Payload()}))
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2
    assert "holds more than tensors and was not loaded" in capsys.readouterr().err
    # an object array in the neutral weights
    np.save(tmp_path / "obj.npy", np.array([_Payload()], dtype=object), allow_pickle=True)
    with open(run / "checkpoints" / "best" / "weights.npz", "wb") as f:
        np.savez(f, **{"conv1/kernel": np.array([_Payload()], dtype=object)})
    assert main(["evaluate", str(run), "--checkpoint", "best"]) == 2
    assert "weights.npz is damaged (conv1/kernel.npy holds Python objects" in capsys.readouterr().err
    # a Python tag in the run's config
    (run / "config.yaml").write_text("engine: !!python/object/apply:os.system [touch pwned]\n")
    assert main(["evaluate", str(run)]) == 2
    assert "holds a tag clsf will not construct" in capsys.readouterr().err
    # a .keras file with a Lambda layer (Python bytecode): clsf's check refuses it before Keras reads it
    out = tmp_path / "export"
    assert main(["export", str(runs / "keras"), "--format", "keras", "--out", str(out)]) == 0
    inp = keras.Input((12, 12, 3))
    keras.Model(inp, keras.layers.Lambda(lambda x: x * 0 + __import__("os").getpid())(inp)).save(out / "model.keras")
    capsys.readouterr()
    assert main(["predict", str(out), str(_images(tmp_path / "img", 1))]) == 2
    assert "holds the class keras.layers.Lambda" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def _crafted_folder(runs, tmp_path, fmt, name):
    """A folder that looks like a clsf export of `fmt` (its clsf.json copied from a real one)."""
    real = tmp_path / f"real-{fmt}"
    assert main(["export", str(runs / "torch"), "--format", fmt, "--out", str(real)]) == 0
    folder = tmp_path / f"crafted-{fmt}"
    folder.mkdir()
    (folder / "clsf.json").write_text((real / "clsf.json").read_text())
    return folder / name


@pytest.mark.tf
def test_a_savedmodel_that_writes_a_file_is_refused_before_it_runs(runs, tmp_path, capsys):
    import tensorflow as tf

    target = tmp_path / "pwned"

    class Evil(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 12, 12, 3], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(target), "written by a crafted SavedModel")
            return tf.zeros([tf.shape(x)[0], 3])

    evil = Evil()
    path = _crafted_folder(runs, tmp_path, "savedmodel", "saved_model")
    tf.saved_model.save(evil, str(path), signatures={"serving_default": evil.serve})
    capsys.readouterr()
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2
    err = capsys.readouterr().err
    assert "holds the operation WriteFile, which is not pure tensor math" in err and err.count("\n") == 1
    assert not target.exists()


@pytest.mark.torch
def test_a_torchscript_file_with_code_that_runs_on_load_is_refused(runs, tmp_path, capsys):
    import torch

    class Evil(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2))

        @torch.jit.export
        def __getstate__(self) -> tuple[bool, bool]:
            return (self.training, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[bool, bool]) -> None:
            print("code that ran on load")
            self.training = state[0]

    path = _crafted_folder(runs, tmp_path, "torchscript", "model.pt")
    torch.jit.script(Evil()).save(str(path))
    capsys.readouterr()
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2
    out, err = capsys.readouterr()
    assert "holds a method __getstate__" in err or "holds a method __setstate__" in err
    assert "code that ran on load" not in out + err


@pytest.mark.torch
def test_an_onnx_file_with_a_custom_op_domain_is_refused(runs, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("RunShell", ["images"], ["output"], domain="com.example.evil")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 12, 12, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.example.evil", 1)])
    path = _crafted_folder(runs, tmp_path, "onnx", "model.onnx")
    onnx.save(model, str(path))
    capsys.readouterr()
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2
    assert "holds the operation com.example.evil.RunShell" in capsys.readouterr().err


@pytest.mark.tf
def test_a_garbage_keras_file_is_named_as_such(runs, tmp_path, capsys):
    path = _crafted_folder(runs, tmp_path, "keras", "model.keras")
    path.write_bytes(b"not a zip at all")
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2
    assert "is not a .keras file (a zip archive)" in capsys.readouterr().err


@pytest.mark.tf
def test_a_savedmodel_whose_serve_attribute_saves_a_checkpoint_is_refused(runs, tmp_path, capsys):
    """The signature is harmless; the object's `serve` function (what an attribute call would run)
    writes a checkpoint with the saver's own op. Predict must run only what was checked."""
    import tensorflow as tf

    target = tmp_path / "pwned"
    spec = tf.TensorSpec([None, 12, 12, 3], tf.float32)

    class Evil(tf.Module):
        def __init__(self):
            super().__init__()
            self.v = tf.Variable(1.0)

        @tf.function(input_signature=[spec])
        def harmless(self, x):
            return tf.zeros([tf.shape(x)[0], 3])

        @tf.function(input_signature=[spec])
        def serve(self, x):
            save = tf.raw_ops.SaveV2(prefix=str(target), tensor_names=["v"], shape_and_slices=[""],
                                     tensors=[self.v.read_value()])
            with tf.control_dependencies([save]):
                return tf.zeros([tf.shape(x)[0], 3])

    evil = Evil()
    path = _crafted_folder(runs, tmp_path, "savedmodel", "saved_model")
    tf.saved_model.save(evil, str(path), signatures={"serving_default": evil.harmless})
    capsys.readouterr()
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2
    err = capsys.readouterr().err
    assert "holds the operation SaveV2, which is not pure tensor math" in err and err.count("\n") == 1
    assert not list(tmp_path.glob("pwned*"))


@pytest.mark.tf
def test_a_tf1_savedmodel_is_refused(runs, tmp_path, capsys):
    """Without an object graph TensorFlow loads a SavedModel by running the graph's own restore and
    init ops, which the check cannot vouch for."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = _crafted_folder(runs, tmp_path, "savedmodel", "saved_model")
    import shutil

    shutil.copytree(tmp_path / "real-savedmodel" / "saved_model", path)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    sm.meta_graphs[0].ClearField("object_graph_def")
    (path / "saved_model.pb").write_bytes(sm.SerializeToString())
    capsys.readouterr()
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2
    assert "holds a TensorFlow 1 graph" in capsys.readouterr().err


def _evil_torchscript(target):
    """A scripted module whose __setstate__ (run by torch.jit.load) creates `target`."""
    import torch

    class Evil(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.path = str(target)

        def forward(self, x):
            return x.mean(dim=(1, 2))

        @torch.jit.export
        def __getstate__(self) -> tuple[bool, str]:
            return (self.training, self.path)

        @torch.jit.export
        def __setstate__(self, state: tuple[bool, str]) -> None:
            t = torch.from_file(state[1], True, 8)  # creates the file
            self.path = state[1]
            self.training = state[0] and t.numel() == 8

    return torch.jit.script(Evil())


@pytest.mark.torch
def test_a_torchscript_archive_with_a_duplicated_code_entry_is_refused(runs, tmp_path, capsys):
    """Of a duplicated name, Python's zipfile reads the last copy and torch's reader one found by a
    search of the sorted directory: one copy runs code on load, the other is harmless. The check must
    read what torch reads. Both orders are written; the one torch loads the harmful copy of is kept."""
    import io
    import re
    import warnings
    import zipfile

    import torch

    target = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.jit.save(_evil_torchscript(target), buf)
    path = _crafted_folder(runs, tmp_path, "torchscript", "model.pt")
    for harmful_first in (True, False):
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w") as out, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile's "Duplicate name" warning: the point of this file
            for info in src.infolist():
                data = src.read(info.filename)
                copies = [data]
                if b"__setstate__" in data:  # a copy without the methods that run on load
                    clean = re.sub(rb"  def __(get|set)state__\(.*?(?=\n  def |\Z)", b"", data, flags=re.S)
                    copies = [data, clean] if harmful_first else [clean, data]
                for copy in copies:
                    out.writestr(info.filename, copy)
        try:
            torch.jit.load(str(path))  # unchecked, the file does what it is built to do ...
        except RuntimeError:
            pass  # torch read the harmless copy, which does not fit the pickled state
        if target.exists():
            break
    assert target.exists()
    target.unlink()
    capsys.readouterr()
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2  # ... and clsf refuses it
    err = capsys.readouterr().err
    assert "twice" in err and err.count("\n") == 1
    assert not target.exists()


@pytest.mark.torch
def test_a_torchscript_archive_with_a_foreign_record_is_refused(runs, tmp_path, capsys):
    import zipfile

    real = tmp_path / "real"
    assert main(["export", str(runs / "torch"), "--format", "torchscript", "--out", str(real)]) == 0
    path = _crafted_folder(runs, tmp_path, "torchscript", "model.pt")
    with zipfile.ZipFile(real / "model.pt") as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
        out.writestr("archive/payload.so", b"\x7fELF")
    capsys.readouterr()
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2
    assert "a record payload.so that torch.jit.save does not write" in capsys.readouterr().err


@pytest.mark.torch
def test_an_onnx_file_with_external_data_is_refused(runs, tmp_path, capsys):
    """External data makes the runtime read another file (here one outside the folder)."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("float_data")
    weight.external_data.add(key="location", value="../../../../etc/hostname")
    node = helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0)
    add = helper.make_node("Add", ["m", "w"], ["output"])
    graph = helper.make_graph([node, add], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, 12, 12, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 3])], [weight])
    path = _crafted_folder(runs, tmp_path, "onnx", "model.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    capsys.readouterr()
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2
    assert "holds a tensor stored in another file (external data)" in capsys.readouterr().err


@pytest.mark.tf
@pytest.mark.parametrize("damage", ["duplicate", "member", "tfsm_layer", "external_link"])
def test_a_crafted_keras_archive_is_refused_before_keras_reads_it(runs, tmp_path, capsys, damage):
    """A .keras file whose config names a layer that loads other files (TFSMLayer runs a SavedModel from
    any path), a second copy of a member, an extra member, or weights linking to another HDF5 file."""
    import io
    import json
    import warnings
    import zipfile

    import h5py

    real = tmp_path / "real"
    assert main(["export", str(runs / "torch"), "--format", "keras", "--out", str(real)]) == 0
    path = _crafted_folder(runs, tmp_path, "keras", "model.keras")
    with zipfile.ZipFile(real / "model.keras") as src:
        members = {n: src.read(n) for n in src.namelist()}
    if damage == "tfsm_layer":
        config = json.loads(members["config.json"])
        layer = config["config"]["layers"][1]
        layer.update({"module": "keras.layers", "class_name": "TFSMLayer", "registered_name": None})
        layer["config"] = {"filepath": str(tmp_path / "elsewhere"), "call_endpoint": "serve", "name": layer["config"]["name"]}
        members["config.json"] = json.dumps(config).encode()
    if damage == "external_link":
        buf = io.BytesIO(members["model.weights.h5"])
        with h5py.File(buf, "a") as f:
            f["stolen"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/")
        members["model.weights.h5"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n, data in members.items():
            out.writestr(n, data)
        if damage == "duplicate":
            out.writestr("config.json", members["config.json"])
        if damage == "member":
            out.writestr("assets/run.py", b"print('hi')")
    capsys.readouterr()
    assert main(["predict", str(path.parent), str(_images(tmp_path / "img", 1))]) == 2
    err = capsys.readouterr().err
    expected = {"duplicate": "holds the name config.json twice", "member": "holds a member assets/run.py",
                "tfsm_layer": "holds the class keras.layers.TFSMLayer", "external_link": "holds a link stolen"}[damage]
    assert expected in err and err.count("\n") == 1
