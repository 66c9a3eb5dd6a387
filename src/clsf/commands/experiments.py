"""`clsf compare`, `clsf sweep`, `clsf tune`: many runs, each an ordinary `clsf train` process;
`clsf report`: a page for runs and folders."""

from __future__ import annotations

import argparse

from clsf.commands.common import add_recipe_args, config_of
from clsf.engines import names as engine_names
from clsf.errors import UserError


def _quiet_children(args) -> None:
    """--quiet: one line per run or trial even on a terminal (off one that is the default)."""
    if args.quiet:
        from clsf.experiments import runner

        runner.ECHO[0] = False


def _executor(args):
    """--executor ray: the runs as tasks on a Ray cluster; None: here, one after another."""
    if args.executor != "ray":
        given = [f for f, v in (("--ray-address", args.ray_address), ("--cpus-per-run", args.cpus_per_run),
                                ("--gpus-per-run", args.gpus_per_run)) if v is not None]
        if given:
            raise UserError(f"{given[0]} goes with --executor ray; add --executor ray or drop {given[0]}.")
        return None
    from clsf.experiments.cluster import RayExecutor

    return RayExecutor(args.ray_address, 1.0 if args.cpus_per_run is None else args.cpus_per_run,
                       0.0 if args.gpus_per_run is None else args.gpus_per_run)


def _add_quiet(p) -> None:
    p.add_argument("--quiet", action="store_true", help="one line per run (the default off a terminal); every run's own "
                   "lines are in the folder's logs/")


def _add_executor(p, what: str = "runs") -> None:
    p.add_argument("--executor", choices=("local", "ray"), default="local", help=f"where the {what} train: here "
                   "(default), or as tasks on a Ray cluster (the ray extra; the folder on a filesystem every node shares)")
    p.add_argument("--ray-address", metavar="HOST:PORT", help="the Ray cluster (default: $RAY_ADDRESS)")
    p.add_argument("--cpus-per-run", type=float, metavar="N", help="CPUs each run reserves on its node, and its "
                   "thread count (default: 1)")
    p.add_argument("--gpus-per-run", type=float, metavar="N", help="GPUs each run reserves (default: 0)")


def cmd_compare(args) -> int:
    from clsf.experiments.compare import compare, parse_engines, parse_seeds

    _quiet_children(args)
    engines, seeds = parse_engines(args.engines), parse_seeds(args.seeds)
    compare(config_of(args), engines, seeds, args.out, args.independent_init, _executor(args))
    return 0


def cmd_sweep(args) -> int:
    from clsf.experiments.compare import parse_seeds
    from clsf.experiments.sweep import parse_grid, sweep

    _quiet_children(args)
    sweep(config_of(args), parse_grid(args.grid), parse_seeds(args.seeds), args.out, _executor(args))
    return 0


def cmd_tune(args) -> int:
    from clsf.experiments.tune import tune

    _quiet_children(args)
    import functools

    make_config = functools.partial(config_of, args)  # make_config(recipe): a searched recipe takes --recipe's place
    tune(make_config, args.space, args.trials, args.workers, args.out, args.storage, args.study, args.argv, args.minutes,
         _executor(args), args.worker_of)
    return 0


def cmd_report(args) -> int:
    from clsf.report.build import write_report

    print(f"wrote {write_report(args.paths, args.out)}")
    return 0


def _compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="one recipe through several engines and seeds, each run in its own process",
                       description="Train the same recipe with each engine and seed (every run in its own process, the "
                                   "engines of a seed from the same initial weights), then write a table of mean ± std, "
                                   "overlaid curves and a verdict. Run the same command again to finish a stopped compare.")
    p.add_argument("--engines", default="keras,tf,torch", help="comma list (default: %(default)s); the first one's "
                   "initial weights are given to the others")
    p.add_argument("--seeds", default="0", help="comma list of seeds (default: %(default)s)")
    p.add_argument("--independent-init", action="store_true", help="let each engine draw its own initial weights")
    _add_quiet(p)
    p.add_argument("--out", metavar="FOLDER", help="the compare folder (default: RUNS_DIR/compare-MODEL-DATA-PLANID)")
    _add_executor(p)
    add_recipe_args(p)
    p.set_defaults(func=cmd_compare)


def _sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="a grid of config values with one engine; a results table and plots",
                       description="Train every point of a grid (x seeds) with one engine, each an ordinary run in its "
                                   "own process. Run the same command again to skip finished points and resume the rest.")
    p.add_argument("--engine", choices=engine_names(), help="default: keras")
    p.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                   help="config keys and their values, e.g. batch_size=16,32,64 optim.name=rmsprop,adam model.args.activation=relu,elu")
    p.add_argument("--seeds", default="0", help="comma list of seeds (default: %(default)s)")
    p.add_argument("--out", metavar="FOLDER", help="the sweep folder (default: RUNS_DIR/sweep-MODEL-DATA-PLANID)")
    _add_executor(p)
    add_recipe_args(p)
    _add_quiet(p)
    p.set_defaults(func=cmd_sweep)


def _tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="an Optuna search over config keys, with pruning; every trial an ordinary run",
                       description="Search config keys (a YAML space: ranges, log ranges, choices, recipes) with Optuna: "
                                   "TPE by default, bad trials pruned from their per-epoch validation, the study kept in a "
                                   "database so the same command continues it and several workers (--workers here, or "
                                   "other machines given the same --storage and --study) share it. Needs the tune extra.")
    p.add_argument("--space", required=True, metavar="FILE", help="the search space YAML (see docs/tune.md)")
    p.add_argument("--engine", choices=engine_names(), help="default: keras")
    p.add_argument("--trials", type=int, help="finished (complete or pruned) trials to reach (default: the space "
                   "file's trials, else 20)")
    p.add_argument("--workers", type=int, default=1, help="trials trained at once on this machine, each with its share "
                   "of the cores (default: %(default)s)")
    p.add_argument("--minutes", type=float, metavar="M", help="the study's time budget: no trial starts after M minutes "
                   "(running ones finish); default: none")
    p.add_argument("--storage", metavar="URL", help="the study's database: sqlite:///FILE, postgresql://..., mysql://... "
                   "(default: $CLSF_TUNE_STORAGE, else FOLDER/study.db)")
    p.add_argument("--study", metavar="NAME", help="the study's name in the storage (default: the folder's name)")
    p.add_argument("--out", metavar="FOLDER", help="the tune folder (default: RUNS_DIR/tune-MODEL-DATA-PLANID)")
    p.add_argument("--worker-of", metavar="PID:I", help=argparse.SUPPRESS)  # an extra worker: clsf tune's own
    _add_executor(p, "tune workers")
    add_recipe_args(p)
    _add_quiet(p)
    p.set_defaults(func=cmd_tune)


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="a self-contained HTML page and report.md for runs, or a compare/sweep/tune folder")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_FOLDER",
                   help="one run (config, curves, confusion, mistakes), several runs or folders of runs (table, "
                        "differing config keys, overlaid curves), or a compare/sweep/tune folder (a tune folder: its study too)")
    p.add_argument("--out", metavar="FOLDER", help="where to write (default: into the run or compare/sweep/tune folder; "
                   "./clsf-report, or the next free clsf-report-N, for several runs)")
    p.set_defaults(func=cmd_report)


def add(sub) -> None:
    """This module's subcommands, in the order `clsf --help` lists them."""
    _compare_parser(sub)
    _sweep_parser(sub)
    _tune_parser(sub)
    _report_parser(sub)
