"""`clsf engines`, `clsf recipes`, `clsf models list|show|summary|import`: what clsf has."""

from __future__ import annotations

import argparse

from clsf.commands.common import image_size
from clsf.engines import ENGINES
from clsf.engines import names as engine_names


def _shape(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape; use e.g. 32x32x3") from None


def cmd_recipes(args) -> int:
    from clsf.recipes import describe, names, recipe_path

    if args.name:
        print(recipe_path(args.name).read_text(), end="")
        return 0
    width = max(map(len, names()))
    for name in names():
        print(f"{name:<{width}}  {describe(name)}")
    return 0


def cmd_engines(args) -> int:
    width = max(map(len, ENGINES))
    for e in ENGINES.values():
        several = f"--nproc via {e.launcher}" if e.launcher else "one process"
        print(f"{e.name:<{width}}  {e.summary} (needs {e.requires}; {several}"
              + (f"; exports {', '.join(e.exports)})" if e.exports else ")"))
    return 0


def cmd_models_list(args) -> int:
    from clsf.models.spec import param_count
    from clsf.models.zoo import REGISTRY, get_spec

    width = max(map(len, REGISTRY))
    for name, entry in REGISTRY.items():
        print(f"{name:<{width}}  {param_count(get_spec(name)):>10,}  {entry.summary}")
    return 0


def cmd_models_show(args) -> int:
    from clsf.models.yaml_spec import spec_to_yaml
    from clsf.models.zoo import get_spec

    print(spec_to_yaml(get_spec(args.name, args.num_classes, args.input_shape)), end="")
    return 0


def cmd_models_summary(args) -> int:
    from clsf.models.summary import draw_diagram, format_summary
    from clsf.models.zoo import get_spec

    spec = get_spec(args.name, args.num_classes, args.input_shape, args.init)
    print(format_summary(spec, args.framework))
    if args.diagram:
        print(f"wrote {draw_diagram(spec, args.diagram)}")
    return 0


def cmd_models_import(args) -> int:
    from clsf.run.imported import import_model

    path = import_model(args.source, args.model, args.out, args.image_size, args.engine)
    print(f"wrote {path}: {args.model} with the weights of {args.source} as a run directory — clsf predict {path} IMAGES")
    return 0


def _engines_parser(sub) -> None:
    p = sub.add_parser("engines", help="the registered engines")
    p.set_defaults(func=cmd_engines)


def _recipes_parser(sub) -> None:
    p = sub.add_parser("recipes", help="the named recipes (--recipe NAME); with a name, its config keys")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_recipes)


def _models_parser(sub) -> None:
    models = sub.add_parser("models", help="the model registry").add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = models.add_parser("list", help="registered models with parameter counts")
    p.set_defaults(func=cmd_models_list)
    p = models.add_parser("show", help="a model as a YAML model file, to start your own from (clsf train --model FILE.yaml)")
    p.add_argument("name", help="a registered model (see `clsf models list`) or a model file")
    p.add_argument("--yaml", action="store_true", help="YAML output (the only format; accepted for clarity)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--input-shape", type=_shape, metavar="HxWxC", default=None)
    p.set_defaults(func=cmd_models_show)
    p = models.add_parser("summary", help="layer table (output shapes, parameters) as built by a framework")
    p.add_argument("name", help="a registered model (see `clsf models list`) or a YAML model file")
    p.add_argument("--framework", choices=("keras", "torch"), default="keras")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--input-shape", type=_shape, metavar="HxWxC", default=None)
    p.add_argument("--init", choices=("glorot_uniform", "he_uniform", "torch_default"), default=None)
    p.add_argument("--diagram", metavar="PNG", help="also draw the model to this PNG (matplotlib; no graphviz needed)")
    p.set_defaults(func=cmd_models_summary)
    p = models.add_parser("import", help="pretrained weights as a run directory: predict, evaluate and export it as it is",
                          description="Read SOURCE's weights (imagenet: an installed package's; or a .pth/.pt, "
                                      ".safetensors, .weights.h5/.keras/.h5 or .npz file) into a zoo backbone, head and "
                                      "classes as the file has them, and write a run directory (no training) that "
                                      "clsf predict, evaluate and export take. To fine-tune, train with "
                                      "model.pretrained=SOURCE instead.")
    p.add_argument("source", help="imagenet, or a weights file")
    p.add_argument("--model", required=True, help="the zoo backbone the weights are for (efficientnet-lite0, mobilenet-v2, "
                   "resnet-18, resnet-50)")
    p.add_argument("--out", required=True, metavar="FOLDER", help="the run directory to write (new or empty)")
    p.add_argument("--image-size", type=image_size, metavar="HxW", help="input size (default: the weights' own resolution)")
    p.add_argument("--engine", choices=engine_names(), help="the engine predict uses (default: torch, else keras)")
    p.set_defaults(func=cmd_models_import)


def add(sub) -> None:
    """This module's subcommands, in the order `clsf --help` lists them."""
    _engines_parser(sub)
    _recipes_parser(sub)
    _models_parser(sub)
