"""`clsf data info|show`: a dataset's counts, shape and checksum; a grid of its images."""

from __future__ import annotations

from clsf.commands.common import add_data_args
from clsf.errors import UserError


def _load(args):
    from clsf.data import load_dataset

    return load_dataset(args.data, args.data_dir, args.channels, args.image_size, args.skip_bad)


def cmd_data_info(args) -> int:
    from clsf.data.info import describe

    print(describe(_load(args)))
    return 0


def cmd_data_show(args) -> int:
    from clsf.report.grid import save_sample_grid

    ds = _load(args)
    if args.split not in ds.splits:
        raise UserError(f"{ds.source} has no '{args.split}' split; use one of {', '.join(ds.splits)}.")
    s = ds[args.split]
    out = save_sample_grid(s.x, s.y, ds.class_names, args.out, rows=args.rows, cols=args.cols,
                           seed=args.seed, title=f"{ds.name} ({args.split})")
    print(f"wrote {out}")
    return 0


def _data_parser(sub) -> None:
    data = sub.add_parser("data", help="inspect datasets").add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = data.add_parser("info", help="counts per class and split, image shape, source and checksum")
    add_data_args(p)
    p.set_defaults(func=cmd_data_info)
    p = data.add_parser("show", help="write a labelled grid of sample images")
    add_data_args(p)
    p.add_argument("--out", default="samples.png", help="PNG to write (default: %(default)s)")
    p.add_argument("--split", default="train", help="split to draw from (default: %(default)s)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_show)


def add(sub) -> None:
    """This module's subcommands, in the order `clsf --help` lists them."""
    _data_parser(sub)
