"""`clsf evaluate`, `clsf predict`, `clsf export`: what a trained run is for."""

from __future__ import annotations

import sys

from clsf.engines import export_formats
from clsf.engines import names as engine_names
from clsf.errors import UserError
from clsf.run.checkpoints import CHECKPOINT_HELP


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


def add(sub) -> None:
    """This module's subcommands, in the order `clsf --help` lists them."""
    _evaluate_parser(sub)
    _export_parser(sub)
    _predict_parser(sub)
