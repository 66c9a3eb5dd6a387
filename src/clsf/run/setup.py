"""What training and every command that reloads a run share: the data, the model spec, an engine
holding a checkpoint's weights, and the metrics of a split."""

from __future__ import annotations

import numpy as np

from clsf.config import Config
from clsf.data import Prepared, load_dataset, prepare
from clsf.data.stream import Files, sample_for_stats
from clsf.data.transforms import channel_stats
from clsf.engines import create_engine
from clsf.engines.base import metrics_from_logits
from clsf.errors import UserError
from clsf.data.base import machine_memory
from clsf.models.spec import ModelSpec, freeze_batch_norms, output_shape, param_count, training_bytes
from clsf.models.yaml_spec import is_spec_file
from clsf.models.zoo import get_spec
from clsf.techniques import class_weights
from clsf.run.rundir import RunDir


def load_data(cfg: Config) -> Prepared:
    d = cfg.data
    ds = load_dataset(d.name, d.data_dir, d.channels, d.image_size, d.skip_bad, d.stream)
    prep = prepare(ds, d.val_split, cfg.seed, d.train_subset, d.test_subset, d.val_subset, d.test_split)
    if d.scale == "standardize" and (d.mean is None or d.std is None):  # from the training split only; stored in config.yaml
        x = prep.train.x
        d.mean, d.std = channel_stats(sample_for_stats(x, cfg.seed) if isinstance(x, Files) else x)  # streamed: 10k of them
    # one weight per class, from the training split likewise (config.yaml keeps the resolved list)
    cfg.optim.class_weight = class_weights.resolve(cfg.optim.class_weight, prep.train.y, ds.class_names)
    return prep


def build_spec(cfg: Config, image_shape, num_classes: int, run: RunDir | None = None) -> ModelSpec:
    """The model to train, or (given `run`) the one a run trained: its saved model file, so a run
    reloads without the file or registry entry it was built from."""
    if run is not None and run.has_model_file():
        return run.model_spec()
    # a registry GAN part is named as such before its input shape is forced onto it
    kind = "classifier" if is_spec_file(cfg.model.name) else get_spec(cfg.model.name).kind
    spec = get_spec(cfg.model.name, num_classes, image_shape, cfg.model.init, **cfg.model.args) if kind == "classifier" else None
    if spec is None or spec.kind != "classifier":
        raise UserError(f"model '{cfg.model.name}' is a GAN {kind if spec is None else spec.kind}, not a classifier; "
                        f"choose a classifier (see `clsf models list`).")
    if cfg.model.bn_frozen:
        spec = freeze_batch_norms(spec)
    out = output_shape(spec)
    if out != (num_classes,):
        raise UserError(f"model '{cfg.model.name}' outputs {out} but the data has {num_classes} classes; "
                        f"give its last layer units: num_classes.")
    if cfg.model.whiten_init:  # its first layer must be one it can set: refused before anything is written
        from clsf.techniques.whitening import first_conv

        first_conv(spec)
    need, have = training_bytes(spec, cfg.batch_size), machine_memory()
    if need > 0.8 * have:  # refused before a framework allocates anything
        raise UserError(f"model '{cfg.model.name}' would need about {need / 2**30:,.1f} GiB to train at batch "
                        f"{cfg.batch_size} ({param_count(spec):,} parameters), more than this machine's "
                        f"{have / 2**30:.1f} GiB; make it smaller or lower --batch-size.")
    return spec


def checkpoint_engine(run: RunDir, cfg: Config, which: str):
    """cfg's engine holding the neutral weights of the run's checkpoints/<which>, for inference only."""
    engine = create_engine(cfg, build_spec(cfg, run.image_shape, len(run.class_names), run), 1)
    engine.load(run.checkpoint(which), training_state=False)
    return engine


def test_report(logits: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    """Metrics of a split from an engine's logits: the one definition `train` and `evaluate` share."""
    loss, acc = metrics_from_logits(logits, y)
    k = len(class_names)
    pred = logits.argmax(1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {name: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, name in enumerate(class_names)}
    return {"test_loss": loss, "test_acc": acc, "test_images": int(len(y)), "per_class_acc": per_class,
            **class_metrics(cm, class_names), "confusion": cm.tolist(), "class_names": class_names}


def class_metrics(cm: np.ndarray, class_names: list[str]) -> dict:
    """From a confusion matrix (rows: true class): each class's precision, recall and F1, and over the
    classes with test images their mean recall (balanced accuracy) and mean F1 (macro-F1): the
    numbers that say how the rare classes fare, where plain accuracy says how the common ones do."""
    support, predicted, hits = cm.sum(1), cm.sum(0), np.diag(cm)
    per = {}
    for i, name in enumerate(class_names):
        p = float(hits[i] / predicted[i]) if predicted[i] else 0.0
        r = float(hits[i] / support[i]) if support[i] else None
        f1 = (2 * p * r / (p + r) if p + r else 0.0) if r is not None else None
        per[name] = {"precision": p, "recall": r, "f1": f1, "images": int(support[i])}
    present = [v for v in per.values() if v["recall"] is not None]
    return {"per_class": per, "balanced_acc": float(np.mean([v["recall"] for v in present])) if present else None,
            "macro_f1": float(np.mean([v["f1"] for v in present])) if present else None}
