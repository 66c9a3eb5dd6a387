"""Command line: parse arguments and call library functions; nothing else.

Each subcommand is a parser function beside its command function. Every ClsfError becomes one line
on stderr and its exit code (clsf.errors.EXIT_CODES: 2 bad input, 3 non-finite loss, 5 disk full,
6 a lost peer, 130 interrupted); output cut off by its reader (`| head`) ends quietly with 141.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clsf.config import OPTIMIZERS
from clsf.engines import ENGINES, export_formats
from clsf.engines import names as engine_names
from clsf.errors import ClsfError, UserError
from clsf.recipes import names as recipe_names
from clsf.run.rundir import CHECKPOINT_HELP


def _image_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h <= 0 or w <= 0:
            raise ValueError
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size; use HxW, e.g. 32x32") from None


def _add_data_args(p: argparse.ArgumentParser, default: str | None = "cifar10-sample") -> None:
    p.add_argument("--data", default=default, metavar="NAME_OR_PATH",
                   help="cifar10, mnist, fashion-mnist, cifar10-sample, synthetic[:opts] or a path (default: %(default)s)")
    p.add_argument("--data-dir", help="where named datasets live (else $CLSF_DATA, else the user cache)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="convert image folders to this many channels")
    p.add_argument("--image-size", type=_image_size, metavar="HxW", help="resize the images to HxW")
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) images that cannot be decoded")


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


def _flags(args) -> dict:
    """The config flags a command was given (absent ones left out), as nested config keys."""
    from clsf.config import flags_to_config

    return flags_to_config(vars(args))


def cmd_train(args) -> int:
    from clsf.distributed.launch import train_command

    train_command(args.argv, args.config, args.recipe, _flags(args), args.overrides, args.resume, args.nproc, args.quiet,
                  args.weights_only, args.nodes, args.node_rank, args.trial)
    return 0


def cmd_gan(args) -> int:
    from clsf.config import build_config
    from clsf.gans.train import gan

    if args.resume:
        gan(resume=args.resume, quiet=args.quiet, epochs=args.epochs)
        return 0
    gan(build_config(None, _flags(args), args.overrides), quiet=args.quiet)
    return 0


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


def cmd_compare(args) -> int:
    from clsf.config import build_config
    from clsf.experiments.compare import compare, parse_engines, parse_seeds

    _quiet_children(args)
    engines, seeds = parse_engines(args.engines), parse_seeds(args.seeds)
    compare(build_config(args.config, _flags(args), args.overrides, args.recipe), engines, seeds, args.out, args.independent_init,
            _executor(args))
    return 0


def cmd_sweep(args) -> int:
    from clsf.config import build_config
    from clsf.experiments.compare import parse_seeds
    from clsf.experiments.sweep import parse_grid, sweep

    _quiet_children(args)
    sweep(build_config(args.config, _flags(args), args.overrides, args.recipe), parse_grid(args.grid), parse_seeds(args.seeds), args.out,
          _executor(args))
    return 0


def cmd_tune(args) -> int:
    from clsf.config import build_config
    from clsf.experiments.tune import tune

    _quiet_children(args)
    flags, overrides = _flags(args), args.overrides

    def make_config(recipe: str | None = None):  # a searched recipe takes --recipe's place under everything else
        return build_config(args.config, flags, overrides, recipe or args.recipe)

    tune(make_config, args.space, args.trials, args.workers, args.out, args.storage, args.study, args.argv, args.minutes,
         _executor(args), args.worker_of)
    return 0


def cmd_report(args) -> int:
    from clsf.report.build import write_report

    print(f"wrote {write_report(args.paths, args.out)}")
    return 0


def cmd_evaluate(args) -> int:
    import json

    from clsf.run.evaluate import evaluate

    report = evaluate(args.run, args.checkpoint, args.engine, args.split, args.data)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.split}_loss {report['test_loss']:.4f}  {args.split}_acc {report['test_acc']:.4f}  ({report['test_images']} "
          f"images, {report['weights']}, engine {report['engine']}; trained with {report['trained_with']})")
    if "agreement" in report:
        a = report["agreement"]
        print(f"against the logits saved at training: same prediction on {100 * a['same_prediction']:.2f}% of images, "
              f"max |logit difference| {a['max_abs_logit_diff']:.2g}")
    print(f"balanced accuracy {report['balanced_acc']:.4f}  macro-F1 {report['macro_f1']:.4f}")
    dash = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"  {'class':<14} {'recall':>6} {'precision':>9} {'F1':>6} {'images':>7}")
    for name, m in report["per_class"].items():
        print(f"  {name:<14} {dash(m['recall']):>6} {dash(m['precision']):>9} {dash(m['f1']):>6} {m['images']:>7}")
    return 0


def cmd_predict(args) -> int:
    from clsf.inference import Model, check_options, expand, predict_batches, write

    check_options(args.batch_size, args.top_k)
    files = expand(args.paths)
    model = Model(args.source, args.checkpoint)
    skipped = []
    tty = sys.stderr.isatty()

    def progress(done, total):
        if tty:
            print(f"\rpredict {done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)

    def skip(path, error):
        skipped.append(path)
        print(f"{chr(13) if tty else ''}clsf: skipped {path} ({error})", file=sys.stderr)

    n = write(predict_batches(model, files, args.batch_size, args.skip_bad, skip, progress), model.names, args.format, args.top_k)
    if not n:
        raise UserError(f"none of the {len(files)} files could be read as an image (all skipped); check the files.")
    print(f"{n} images predicted with {model.describe}" + (f"; {len(skipped)} skipped" if skipped else ""), file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from clsf.exports import export

    info = export(args.run, args.format, args.out, args.probabilities, args.checkpoint, args.force)
    v = info["verified"]
    print(f"wrote {info['path']} ({info['format']} of {info['weights']}, output {info['output']}; verified with {v['runtime']} on {v['images']} "
          f"test images: max |difference| {v['max_abs_diff']:.2g}, same prediction {100 * v['same_prediction']:.2f}%)")
    return 0


def _engine_help() -> str:
    return "; ".join(f"{e.name}: {e.summary}" for e in ENGINES.values())


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    """The recipe flags train, compare, sweep and tune share."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys")
    p.add_argument("--model", help="a registered model (default: seed-cnn) or a YAML model file (see `clsf models show`)")
    _add_data_args(p, default=None)
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


class _Parser(argparse.ArgumentParser):
    """argparse with clsf's error form: one line naming the problem and where help is (exit 2)."""

    def error(self, message):
        where = self.prog.partition(" ")[2]  # the subcommand, e.g. "models summary"
        self.exit(2, f"clsf: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from clsf.errors import EXIT_CODES
    parser = _Parser(
        prog="clsf", description=__import__("clsf").__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES.items()))
    parser.add_argument("--version", action="version", version=f"clsf {__import__('clsf').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_data_parser, _engines_parser, _recipes_parser, _models_parser, _train_parser, _gan_parser,
                _compare_parser, _sweep_parser, _tune_parser, _report_parser, _evaluate_parser, _export_parser, _predict_parser):
        add(sub)
    return parser


def _data_parser(sub) -> None:
    data = sub.add_parser("data", help="inspect datasets").add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = data.add_parser("info", help="counts per class and split, image shape, source and checksum")
    _add_data_args(p)
    p.set_defaults(func=cmd_data_info)
    p = data.add_parser("show", help="write a labelled grid of sample images")
    _add_data_args(p)
    p.add_argument("--out", default="samples.png", help="PNG to write (default: %(default)s)")
    p.add_argument("--split", default="train", help="split to draw from (default: %(default)s)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data_show)


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
    p.add_argument("--image-size", type=_image_size, metavar="HxW", help="input size (default: the weights' own resolution)")
    p.add_argument("--engine", choices=engine_names(), help="the engine predict uses (default: torch, else keras)")
    p.set_defaults(func=cmd_models_import)


def cmd_models_import(args) -> int:
    from clsf.run.imported import import_model

    path = import_model(args.source, args.model, args.out, args.image_size, args.engine)
    print(f"wrote {path}: {args.model} with the weights of {args.source} as a run directory — clsf predict {path} IMAGES")
    return 0


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model with one engine; writes a run directory",
                       description="Train a model. Precedence: defaults < --recipe < --config YAML < flags < KEY=VALUE overrides "
                                   "(e.g. optim.schedule=cosine data.hflip=true model.args.dropout=0.5).")
    p.add_argument("--engine", choices=engine_names(), help=f"{_engine_help()} (default: keras)")
    _add_recipe_args(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--run-name", help="name of the run directory (default: time-model-engine-data)")
    p.add_argument("--init-from", metavar="RUN_DIR", help="start from a run's weights (either framework), all but its "
                   "classifier head: a new head for the new data (init_from=RUN keeps the head too)")
    p.add_argument("--freeze", choices=("trunk",), help="keep the --init-from weights of every layer but the head fixed")
    p.add_argument("--unfreeze-after", type=int, metavar="N", help="with --freeze trunk: train the head alone for N "
                   "epochs, then the whole network")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run with its own config; only --epochs (to extend), --device, --quiet, "
                        "--save-every-steps/-minutes, --nproc (at an epoch's end), eval_batch_size=, early_stop_patience= and "
                        "dist_timeout_s= may be given")
    p.add_argument("--weights-only", action="store_true", help="with --resume: continue from the checkpoint's weights "
                   "with a fresh optimizer, when its optimizer state is lost (recorded in env.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--nproc", type=int, metavar="N", help="train in N processes on this machine (torch: DDP through "
                   "torchrun's launcher; tf: MultiWorkerMirroredStrategy; keras runs as one); --batch-size is per process")
    p.add_argument("--nodes", metavar="HOST:PORT,...", help="train on several machines: every machine's address, the "
                   "same list on each, the first one leading (torch: its rendezvous; tf: its chief); with --node-rank")
    p.add_argument("--node-rank", type=int, metavar="I", help="with --nodes: which of them this machine is (0 on the first)")
    p.add_argument("--trial", metavar="FILE", help="a trial file clsf tune wrote: each epoch's objective goes to its "
                   "study, whose pruner may stop the run (how clsf tune trains its trials)")
    _add_outcome(p)
    p.set_defaults(func=cmd_train)


def _gan_parser(sub) -> None:
    from clsf.gans.steps import GANS

    p = sub.add_parser("gan", help="train the MNIST GAN pair (tf or torch) into a run directory, samples scored by a classifier",
                       description="Train the gan-generator/gan-discriminator pair for whole epochs. Settings under gan.* "
                                   "(gan.d_lr, gan.g_lr, gan.beta1, gan.label_noise, gan.sample_every); --judge RUN scores the samples.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--engine", choices=tuple(GANS), default="torch")
    p.add_argument("--data", default="mnist", metavar="NAME_OR_PATH", help="28x28 grayscale images (default: %(default)s)")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--latent", type=int, help="generator input size (default: 128)")
    p.add_argument("--judge", metavar="RUN_DIR", help="a clsf classifier run on the same kind of images, to score samples")
    p.add_argument("--seed", type=int)
    p.add_argument("--runs-dir")
    p.add_argument("--run-name")
    p.add_argument("--resume", metavar="RUN_DIR")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_gan)


def _add_quiet(p) -> None:
    p.add_argument("--quiet", action="store_true", help="one line per run (the default off a terminal); every run's own "
                   "lines are in the folder's logs/")


def _add_outcome(p) -> None:
    p.add_argument("--outcome", metavar="FILE", help="write how the command ended to FILE as JSON: exit_code and error "
                   "(the one-line message, or null) -- what compare, sweep and tune read of each run they start")


def _write_outcome(path: str | None, code: int, error: str | None) -> None:
    """--outcome FILE: the exit status and the error line, for the process that started this one."""
    if path:
        from clsf.run.rundir import write_json

        try:
            write_json(Path(path), {"exit_code": code, "error": error})
        except OSError as e:  # the exit status still says it
            print(f"clsf: warning: --outcome {path} could not be written ({e.strerror or e})", file=sys.stderr)


def _add_executor(p, what: str = "runs") -> None:
    p.add_argument("--executor", choices=("local", "ray"), default="local", help=f"where the {what} train: here "
                   "(default), or as tasks on a Ray cluster (the ray extra; the folder on a filesystem every node shares)")
    p.add_argument("--ray-address", metavar="HOST:PORT", help="the Ray cluster (default: $RAY_ADDRESS)")
    p.add_argument("--cpus-per-run", type=float, metavar="N", help="CPUs each run reserves on its node, and its "
                   "thread count (default: 1)")
    p.add_argument("--gpus-per-run", type=float, metavar="N", help="GPUs each run reserves (default: 0)")


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
    _add_recipe_args(p)
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
    _add_recipe_args(p)
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
    _add_recipe_args(p)
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


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's checkpoint, in any engine, on its test or val split")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--checkpoint", choices=("last", "best", "init"),
                   help=f"{CHECKPOINT_HELP}; init: the weights before training")
    p.add_argument("--engine", choices=engine_names(),
                   help="evaluate with another engine (the weights are framework-neutral; default: the run's own)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="default: %(default)s")
    p.add_argument("--data", metavar="NAME_OR_PATH", help="another dataset with the same classes (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=cmd_evaluate)


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="a run's model as ONNX, TorchScript, SavedModel or .keras, verified against clsf",
                       description="Export a run (any engine) to another runtime. Input: float32 NHWC raw pixels 0-255; "
                                   "output: logits, or probabilities with --probabilities. The export is reloaded with "
                                   "its own runtime and compared with clsf's logits on test images before it is kept.")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=export_formats())
    p.add_argument("--out", metavar="FOLDER", help="default: RUN_DIR/export/FORMAT")
    p.add_argument("--probabilities", action="store_true", help="bake softmax in: the model outputs probabilities")
    p.add_argument("--checkpoint", choices=("last", "best"), help=CHECKPOINT_HELP)
    p.add_argument("--force", action="store_true", help="replace an earlier export in that folder, once the new one is "
                   "verified (only a folder clsf's export wrote)")
    p.set_defaults(func=cmd_export)


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="top-k classes with probabilities for images, folders and globs",
                       description="Predict with a run (its checkpoint) or an export folder (its own runtime). Images "
                                   "are decoded, converted to the model's channels and resized to its input size, in batches.")
    p.add_argument("source", metavar="RUN_OR_EXPORT", help="a run directory or a folder written by clsf export")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or quoted globs")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=256, help="images decoded and predicted at a time (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="report and skip files that cannot be decoded")
    p.add_argument("--checkpoint", choices=("last", "best"), help=f"for a run: {CHECKPOINT_HELP}")
    p.set_defaults(func=cmd_predict)


def run() -> int:
    """The `clsf` program: main(), then Ctrl-C ignored while the interpreter shuts down. The command is
    done by then; a SIGINT in that moment (a tune worker dying just as its trial's process exits) would
    otherwise end in a traceback from the interpreter's exit handlers."""
    import signal

    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a path's undecodable bytes print as \xNN, never as a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]  # KEY=VALUE after a flag: argparse takes one run of positionals
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = sys.argv[1:] if argv is None else list(argv)  # what --nproc runs again in each process
    outcome = getattr(args, "outcome", None)
    try:
        code = args.func(args) or 0
        sys.stdout.flush()  # here, so that a reader gone early is met below and not at the interpreter's exit
        _write_outcome(outcome, code, None)
        return code
    except ClsfError as e:
        if str(e):  # empty: the failure was already said (a process of this launch printed its own line)
            print(f"clsf: error: {e}", file=sys.stderr)
        _write_outcome(outcome, e.exit_code, str(e) or None)
        return e.exit_code
    except KeyboardInterrupt as e:
        if not getattr(e, "reported", False):  # a command that said how far it got (and how to go on) said enough
            print("clsf: interrupted", file=sys.stderr)
        _write_outcome(outcome, 130, "interrupted")
        return 130
    except BrokenPipeError:  # the reader left (`clsf evaluate RUN | head -1`): not an error to report
        import os

        # stdout now goes nowhere, so the interpreter's last flush of it cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a writer stopped by SIGPIPE (128 + 13)
    except Exception as e:  # a crash: its traceback follows on stderr, and the starter learns what it was
        _write_outcome(outcome, 1, f"{type(e).__name__}: {str(e).strip()[:300]}")
        raise
