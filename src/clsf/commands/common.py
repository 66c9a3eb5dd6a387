"""What several commands share: the data and recipe flags, the flags-to-config step, --outcome."""

from __future__ import annotations

import argparse

from clsf.config import OPTIMIZERS
from clsf.engines import ENGINES
from clsf.recipes import names as recipe_names


def image_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h <= 0 or w <= 0:
            raise ValueError
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size; use HxW, e.g. 32x32") from None


def add_data_args(p: argparse.ArgumentParser, default: str | None = "cifar10-sample") -> None:
    p.add_argument("--data", default=default, metavar="NAME_OR_PATH",
                   help="cifar10, mnist, fashion-mnist, cifar10-sample, synthetic[:opts] or a path (default: %(default)s)")
    p.add_argument("--data-dir", help="where named datasets live (else $CLSF_DATA, else the user cache)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="convert image folders to this many channels")
    p.add_argument("--image-size", type=image_size, metavar="HxW", help="resize the images to HxW")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) images that cannot be decoded")


def config_flags(args) -> dict:
    """The config flags a command was given (absent ones left out), as nested config keys."""
    from clsf.config import flags_to_config

    return flags_to_config(vars(args))


def engine_help() -> str:
    return "; ".join(f"{e.name}: {e.summary}" for e in ENGINES.values())


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """The recipe flags train, compare, sweep and tune share."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    p.add_argument("--model", help="a registered model (default: seed-cnn) or a YAML model file (see `clsf models show`)")
    add_data_args(p, default=None)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float)
    p.add_argument("--device", help="torch device: auto (default), cpu, cuda, cuda:N")
    p.add_argument("--runs-dir", help="where run directories go (default: runs)")
    p.add_argument("--config", help="YAML file with config keys (a run's config.yaml works)")
    p.add_argument("--recipe", metavar="NAME", help="a named recipe the config starts from (see `clsf recipes`): "
                   + ", ".join(recipe_names()))
    p.add_argument("--save-every-steps", type=int, metavar="N", help="also checkpoint inside an epoch every N steps")
    p.add_argument("--save-every-minutes", type=float, metavar="M", help="also checkpoint inside an epoch every M minutes")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic kernels in every framework: a rerun gives byte-identical metrics (slower; see README)")
    p.add_argument("--track", choices=("mlflow",), help="log the run to MLflow too (track_uri=...; default: a SQLite "
                   "file beside the runs); needs the track extra")


def add_outcome(p) -> None:
    p.add_argument("--outcome", metavar="FILE", help="write how the command ended to FILE as JSON: exit_code and error "
                   "(the one-line message, or null) -- what compare, sweep and tune read of each run they start")


def config_of(args, recipe: str | None = None):
    """The config a recipe command's flags make: defaults < --recipe (or `recipe`, a searched one in
    its place) < --config < flags < KEY=VALUE."""
    from clsf.config import build_config

    return build_config(args.config, config_flags(args), args.overrides, recipe or args.recipe)
