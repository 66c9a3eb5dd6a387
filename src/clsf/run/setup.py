"""What training and every command that reloads a run share: the data, the model spec, an engine
holding a checkpoint's weights."""

from __future__ import annotations

from clsf.config import Config
from clsf.data import Prepared, load_dataset, prepare
from clsf.data.stream import Files, sample_for_stats
from clsf.data.transforms import channel_stats
from clsf.engines import create_engine
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
    if cfg.optim.muon_lr:  # its rule is for plain convolution kernels: refused before anything is written
        from clsf.techniques.muon import check_model

        check_model(spec, cfg.model.name)
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
