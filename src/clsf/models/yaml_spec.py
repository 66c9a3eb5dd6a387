"""Model specs as YAML files: `--model path/to/net.yaml`, and any spec written back as one.

    name: my-net                # optional (default: the file name)
    input_shape: [32, 32, 3]    # optional: follows the data when left out
    layers:
      - {type: conv, name: conv1, filters: 32, activation: relu}
      - {type: max_pool, pool: 2}                  # a name is optional: max_pool1, max_pool2, ...
      - {type: residual, name: b1, body: [...], shortcut: [...]}
      - {type: flatten}
      - {type: dense, name: logits, units: num_classes}   # num_classes: the data's class count

Every mistake is one line naming the file, the layer (position, type, name) and the fix: an unknown
layer type or argument (with the closest known one), a missing argument, a wrong type, a shape that
cannot work. Loading uses YAML's safe loader only: a file cannot construct Python objects.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import yaml

from clsf.config import read_yaml
from clsf.errors import UserError
from clsf.models.spec import (Activation, ActivityPenalty, AvgPool, BatchNorm, Conv, ConvTranspose, Dense, DepthwiseConv,
                              Dropout, Flatten, GlobalAvgPool, GlobalMaxPool, MaxPool, ModelSpec, Reshape, Residual, Scale,
                              SpecError, SqueezeExcite, validate)

TYPES = {"conv": Conv, "conv_transpose": ConvTranspose, "dense": Dense, "max_pool": MaxPool, "avg_pool": AvgPool,
         "global_avg_pool": GlobalAvgPool, "global_max_pool": GlobalMaxPool, "flatten": Flatten, "reshape": Reshape,
         "dropout": Dropout, "batch_norm": BatchNorm, "scale": Scale, "activation": Activation, "activity_penalty": ActivityPenalty,
         "residual": Residual, "depthwise_conv": DepthwiseConv, "squeeze_excite": SqueezeExcite}
TYPE_NAMES = {cls: name for name, cls in TYPES.items()}
TOP_KEYS = ("name", "input_shape", "init", "kind", "description", "layers")
PLACEHOLDER = "num_classes"  # allowed for dense units / conv filters: the data's class count


def is_spec_file(name: str) -> bool:
    return str(name).lower().endswith((".yaml", ".yml"))


def _hint(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean '{close[0]}'?" if close else f"known: {', '.join(choices)}."


def _value(where: str, key: str, value, typ: str, num_classes: int | None):
    """Check one argument against its field's annotation; substitute the class-count placeholder."""
    if value == PLACEHOLDER and key in ("units", "filters"):
        if num_classes is None:
            raise UserError(f"{where}: {key}: {PLACEHOLDER} needs the data's class count; give --num-classes.")
        return num_classes
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str)}
    if typ in ok:
        if not ok[typ](value):
            raise UserError(f"{where}: {key} expects {typ}, got {value!r}.")
        return float(value) if typ == "float" else value
    if typ.startswith("tuple[int"):  # Reshape.shape
        if not (isinstance(value, list) and all(isinstance(v, int) and v > 0 for v in value)):
            raise UserError(f"{where}: {key} expects a list of positive integers, e.g. [7, 7, 128], got {value!r}.")
        return tuple(value)
    return value


def _layers(items, where: str, num_classes: int | None) -> tuple:
    if not isinstance(items, list) or not items:
        raise UserError(f"{where}: expects a non-empty list of layers, e.g. - {{type: dense, units: 10}}.")
    out, counts = [], {}
    for i, item in enumerate(items, 1):
        at = f"{where} layer {i}"
        if not isinstance(item, dict) or "type" not in item:
            raise UserError(f"{at}: write each layer as a mapping with a type, e.g. {{type: conv, filters: 32}}.")
        kind = item["type"]
        if kind not in TYPES:
            raise UserError(f"{at}: unknown layer type '{kind}'; {_hint(str(kind), TYPES)}")
        cls = TYPES[kind]
        counts[kind] = counts.get(kind, 0) + 1
        args = {k: v for k, v in item.items() if k != "type"}
        name = args.setdefault("name", f"{kind}{counts[kind]}")
        at = f"{at} ({kind} '{name}')"
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in args:
            if key not in fields:
                raise UserError(f"{at}: unknown argument '{key}'; {_hint(key, [f for f in fields if f != 'name'])}")
        missing = [f for f, spec in fields.items() if f not in args and spec.default is dataclasses.MISSING]
        if missing:
            raise UserError(f"{at}: missing argument '{missing[0]}'.")
        values = {}
        for key, value in args.items():
            if cls in (Residual, SqueezeExcite) and key in ("body", "shortcut"):
                values[key] = _layers(value, f"{at} {key}", num_classes) if value else ()
            else:
                values[key] = _value(at, key, value, str(fields[key].type), num_classes)
        out.append(cls(**values))
    return tuple(out)


def spec_from_dict(d, source: str, num_classes: int | None = None, input_shape=None) -> ModelSpec:
    if not isinstance(d, dict):
        raise UserError(f"{source}: a model file holds a mapping with 'layers'; see `clsf models show seed-cnn --yaml`.")
    for key in d:
        if key not in TOP_KEYS:
            raise UserError(f"{source}: unknown key '{key}'; {_hint(str(key), TOP_KEYS)}")
    if "layers" not in d:
        raise UserError(f"{source}: no 'layers' list; see `clsf models show seed-cnn --yaml` for the form.")
    declared = d.get("input_shape")
    if declared is not None:
        if not (isinstance(declared, list) and all(v is None or (isinstance(v, int) and v > 0) for v in declared)):
            raise UserError(f"{source}: input_shape expects [H, W, C] or [D], got {declared!r}.")
        if input_shape is not None and tuple(declared) != tuple(input_shape):
            raise UserError(f"{source} declares input_shape {declared} but the data's images are "
                            f"{'x'.join(map(str, input_shape))}; remove input_shape to follow the data.")
    shape = input_shape if input_shape is not None else declared
    if shape is None:
        raise UserError(f"{source}: the input shape is unknown; add input_shape: [H, W, C] or give --input-shape.")
    name = d.get("name") or Path(source).stem
    spec = ModelSpec(str(name), _layers(d["layers"], source, num_classes), tuple(shape),
                     init=d.get("init", "glorot_uniform"), kind=d.get("kind", "classifier"), description=d.get("description", ""))
    if spec.kind not in ("classifier", "generator", "discriminator"):
        raise UserError(f"{source}: kind '{spec.kind}' is not known; use classifier, generator or discriminator.")
    try:
        validate(spec)
    except SpecError as e:
        raise UserError(f"{source}: {e}.") from None
    return spec


def load_spec_file(path: str | Path, num_classes: int | None = None, input_shape=None) -> ModelSpec:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model file '{path}' does not exist; give a registered model (`clsf models list`) or a YAML file.")
    return spec_from_dict(read_yaml(p, "model file"), str(path), num_classes, input_shape)


def _layer_dict(layer, placeholder: bool) -> dict:
    out = {"type": TYPE_NAMES[type(layer)]}
    for f in dataclasses.fields(layer):
        v = getattr(layer, f.name)
        if f.name != "name" and f.default is not dataclasses.MISSING and v == f.default:
            continue  # defaults stay implicit, so the file reads like the layer list it is
        if isinstance(v, tuple) and f.name in ("body", "shortcut"):
            v = [_layer_dict(sub, False) for sub in v]
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    if placeholder and "units" in out:
        out["units"] = PLACEHOLDER
    return out


def spec_to_yaml(spec: ModelSpec, follow_data: bool = True) -> str:
    """The spec as a model file. With follow_data, the input shape and the class count are left to
    the data (the form to start a new model from); without, the file pins them (what a run saves)."""
    d = {"name": spec.name}
    if not follow_data:
        d["input_shape"] = list(spec.input_shape)
        d["init"] = spec.init
    if spec.kind != "classifier":
        d["kind"] = spec.kind
    if spec.description:
        d["description"] = spec.description
    last = len(spec.layers) - 1
    d["layers"] = [_layer_dict(layer, follow_data and spec.kind == "classifier" and i == last)
                   for i, layer in enumerate(spec.layers)]
    head = "# a clsf model file: clsf train --model THIS.yaml (layer types and arguments: clsf.models.spec)\n"
    return head + yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=110)


def model_digest(spec: ModelSpec) -> str:
    """A short hash of the exact network (its model file's text): what a checkpoint records of the
    model it holds weights for."""
    import hashlib

    return hashlib.sha256(spec_to_yaml(spec, follow_data=False).encode()).hexdigest()[:16]
