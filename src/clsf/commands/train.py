"""`clsf train` and `clsf gan`: a run, here or in several processes, new or resumed."""

from __future__ import annotations

from clsf.commands.common import add_outcome, add_recipe_args, config_flags, config_of, engine_help
from clsf.engines import names as engine_names
from clsf.errors import UserError


def cmd_train(args) -> int:
    """`clsf train` as typed: a new run or a resumed one, here or in --nproc processes (the same
    command again in each, through the engine's launcher), on this machine or as one node of
    several (--trial: a `clsf tune` trial file, whose reporter every process plugs in). Bad input
    stops here, once."""
    from clsf.config import merge, parse_overrides
    from clsf.distributed.cores import check_cores
    from clsf.distributed.launch import Nodes, launch
    from clsf.integrations import plugins as integrations
    from clsf.run.resume import resume_config
    from clsf.run.train import train

    nproc, resume = args.nproc, args.resume
    if nproc is not None and nproc < 1:
        raise UserError(f"--nproc {nproc} must be at least 1.")
    check_cores(nproc or 1, "--nproc")
    if args.weights_only and not resume:
        raise UserError("--weights-only goes with --resume RUN (it continues from a checkpoint's weights); add --resume.")
    if resume and (args.config or args.recipe):
        flag = "--config" if args.config else "--recipe"
        raise UserError(f"{flag} cannot be combined with --resume (a resumed run keeps its own config); drop {flag}.")
    machines = Nodes.parse(args.nodes, args.node_rank)
    plugins = integrations(args.trial)  # MLflow when the config says so; a tune trial's reporter (its file checked here)
    changes = merge(config_flags(args), parse_overrides(args.overrides)) if resume else None
    if (nproc and nproc > 1) or machines:
        cfg = resume_config(resume, changes)[1] if resume else config_of(args)
        launch(args.argv, nproc or 1, cfg.engine, cfg.dist_timeout_s, machines)
    elif resume:
        train(resume=resume, changes=changes, quiet=args.quiet, weights_only=args.weights_only, plugins=plugins)
    else:
        train(config_of(args), quiet=args.quiet, plugins=plugins)
    return 0


def cmd_gan(args) -> int:
    from clsf.config import build_config
    from clsf.gans.train import gan

    if args.resume:
        gan(resume=args.resume, quiet=args.quiet, epochs=args.epochs)
        return 0
    gan(build_config(None, config_flags(args), args.overrides), quiet=args.quiet)
    return 0


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model with one engine; writes a run directory",
                       description="Train a model. Precedence: defaults < --recipe < --config YAML < flags < KEY=VALUE overrides "
                                   "(e.g. optim.schedule=cosine data.hflip=true model.args.dropout=0.5).")
    p.add_argument("--engine", choices=engine_names(), help=f"{engine_help()} (default: keras)")
    add_recipe_args(p)
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
    add_outcome(p)
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


def add(sub) -> None:
    """This module's subcommands, in the order `clsf --help` lists them."""
    _train_parser(sub)
    _gan_parser(sub)
