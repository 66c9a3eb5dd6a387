"""Run configuration: dataclasses, YAML files, `key=value` overrides, validation with clear errors.

The defaults are the classic Keras CIFAR-10 tutorial's settings: batch 32, RMSprop at 1e-3, 5 epochs, validation split 0.2.
A run directory's `config.yaml` is the fully resolved config (dataset statistics filled in) and
can be passed back with `--config` to repeat the run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clsf.engines import names as engine_names
from clsf.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
MAX_EPOCHS = 100_000  # bounds what is allocated per step before training starts (the TF engines' rate table)
MAX_CROP_PADDING = 256  # pixels
MAX_IMAGE_SIDE = 4096  # pixels, data.image_size
SCHEDULES = ("constant", "step", "cosine", "linear", "onecycle")


@dataclass
class DataConfig:
    name: str = "cifar10-sample"  # dataset name or path, see `clsf data info --help`
    data_dir: str | None = None
    val_split: float = 0.2  # fraction of the training split held out, stratified and seeded
    # a dataset without a test split (a folder of class folders): this share of its images held out as the test split,
    # stratified, the same images for every run of it (whatever the seed); 0: refuse to train without test images
    test_split: float = 0.2
    train_subset: int | None = None  # images; None = all
    val_subset: int | None = None  # images of the validation split evaluated each epoch (stratified, seeded); None = all
    test_subset: int | None = None  # images of the test split (stratified, seeded); None = all
    channels: int | None = None
    image_size: list[int] | None = None  # [H, W] for image folders of mixed sizes
    skip_bad: bool = False
    scale: str = "0-1"  # "0-1" | "-1-1" | "standardize"
    mean: list[float] | None = None  # per channel on the 0..1 scale; filled from train when standardizing
    std: list[float] | None = None
    crop_padding: int = 0  # pixels of zero padding for random crops; 0 = off
    hflip: bool = False  # mirror each training image with probability 0.5, drawn per epoch
    hflip_alternate: bool = False  # with hflip: each image's flip alternates between epochs (random in the first)
    mixup: float = 0.0  # Beta(a, a) concentration of mixup's weight, drawn per batch (e.g. 0.2); 0 = off
    cutmix: float = 0.0  # Beta(a, a) concentration of cutmix's box area, drawn per batch (e.g. 1.0); 0 = off; with mixup each batch is one or the other
    cutout: int = 0  # pixels: a square of this side erased from each training image (0 after normalisation); 0 = off
    stream: bool | None = None  # image folders: decode from disk per batch; None = when decoded they'd exceed 4 GiB
    workers: int | None = None  # streaming: torch DataLoader decoding processes; None = 0 on <= 2 cores, else min(4, cores / 2)


@dataclass
class ModelConfig:
    name: str = "seed-cnn"
    init: str = "glorot_uniform"  # "glorot_uniform" (Keras' default) | "he_uniform" | "torch_default"
    args: dict = field(default_factory=dict)  # the model function's options, e.g. {dropout: 0.5}
    whiten_init: bool = False  # the first conv from the training images' patch whitening (airbench's init; clsf.techniques.whitening)
    # every batch norm keeps its moving statistics, in training too (its scale and shift train): for fine-tuning a
    # pretrained network on little data, where batch statistics of a few images would replace ImageNet's
    bn_frozen: bool = False
    # start from pretrained weights: "imagenet" (an installed package's, e.g. efficientnet-lite0's) or a weights file
    # (.pth/.pt, .safetensors, .weights.h5/.keras/.h5, .npz); fixes the options and preprocessing they need (clsf.models.pretrained)
    pretrained: str | None = None


@dataclass
class OptimConfig:
    name: str = "rmsprop"
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    rho: float = 0.9  # rmsprop decay (Keras' rho; torch calls it alpha and defaults to 0.99)
    beta1: float = 0.9  # adam/adamw
    beta2: float = 0.999
    eps: float = 1e-7  # Keras' default, used by both frameworks (torch's default is 1e-8)
    weight_decay: float = 0.0  # decoupled: w -= lr * weight_decay * w each step, every optimizer
    clip_norm: float | None = None  # clip gradients to this global L2 norm
    label_smoothing: float = 0.0
    schedule: str = "constant"  # "constant" | "step" | "cosine" | "linear" (to min_lr, airbench94_muon's) | "onecycle"
    warmup_epochs: float = 0.0  # linear warm-up from 0 (onecycle: from lr/25)
    step_epochs: int = 30  # step schedule: multiply by gamma every step_epochs epochs
    gamma: float = 0.1
    min_lr: float = 0.0  # floor of cosine/linear/onecycle
    ema: float = 0.0  # weight EMA: decay per update (e.g. 0.99); evaluation and checkpoints use the average; 0 = off
    ema_every: int = 1  # optimizer steps between EMA updates (airbench: 5)
    ema_power: float = 0.0  # > 0: the decay ramps as ema * (step / total steps)^ema_power (airbench: 3); 0: TF's num_updates warm-up
    lookahead: bool = False  # after each EMA update the weights being trained become the average (airbench's Lookahead)
    # imbalanced classes: "balanced" (N / (K * n_c) each), {class name: weight}; resolved from the training split into
    # one weight per class (a list, in class order) in config.yaml (clsf.techniques.class_weights)
    class_weight: str | dict | list | None = None
    # with freeze=trunk and unfreeze_after: once every layer trains, the schedule starts again over the remaining
    # epochs at this peak rate (a lower one keeps the pretrained features; clsf.engines.schedule.lr_at)
    unfreeze_lr: float | None = None
    # > 0: every trained convolution kernel steps by Muon at this peak rate (scheduled as lr is), the other
    # variables by optim.name at lr (clsf.techniques.muon; airbench94_muon: 0.24 at batch 2000); 0: off
    muon_lr: float = 0.0
    muon_momentum: float = 0.6  # Muon's Nesterov momentum (airbench94_muon's)


@dataclass
class TFConfig:
    # the Keras/tf train step: "eager" (plain Python) | "graph" (tf.function; keras-jax: jax.jit; keras-torch:
    # eager, the backend's default) | "xla" (jit_compile: XLA; keras-torch: torch.compile)
    mode: str = "graph"


@dataclass
class TorchConfig:
    compile: bool = False  # torch.compile the model for training (the first epoch pays the compile)
    channels_last: bool = True  # NHWC weights and batches: oneDNN's fast layout (bench/step_profile.py); not for convs under 8 channels wide


@dataclass
class GanConfig:
    latent: int = 128  # generator input size
    d_lr: float = 3e-4  # Adam, discriminator (the classic Keras MNIST GAN's rates)
    g_lr: float = 4e-4  # Adam, generator
    beta1: float = 0.5  # Adam's first-moment decay, both optimizers: Keras' default 0.9 collapses here (docs/gan.md)
    label_noise: float = 0.05  # uniform noise added to the discriminator's labels (a classic GAN trick)
    sample_every: int = 200  # steps between sample grids from the fixed latent batch
    judge: str | None = None  # a clsf classifier run (same images) that scores the samples


@dataclass
class Config:
    engine: str = "keras"
    epochs: int = 5
    batch_size: int = 32
    eval_batch_size: int = 1000  # images per evaluation call; never a whole split at once
    tta_flip: bool = False  # evaluation averages each image's logits with its mirror image's (val, test, evaluate)
    tta_shift: int = 0  # pixels; > 0: also averages views translated diagonally by +-tta_shift (airbench's TTA)
    track: str | None = None  # "mlflow": params, per-epoch metrics, final metrics and artifacts to MLflow
    track_uri: str | None = None  # MLflow tracking URI; None = $MLFLOW_TRACKING_URI, else sqlite:///<runs_dir>/mlflow.db
    track_experiment: str | None = None  # MLflow experiment; None = "clsf" (compare and sweep: their folder's name)
    seed: int = 0
    device: str = "auto"  # torch: "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    # "fp32" | "bf16" | "fp16" | "auto": mixed precision (weights stay float32) on a GPU, or bf16 on a CPU with bf16
    # matrix instructions; auto = bf16 where the device computes in it, else fp32 (env.json records which)
    precision: str = "fp32"
    early_stop_patience: int | None = None  # epochs without val_loss improvement; None = off
    init_from: str | None = None  # start from these weights: a checkpoint folder (weights.npz) or a run directory
    init_head: bool = True  # also take the classifier head from init_from (false: a new head, e.g. for new classes)
    freeze: str | None = None  # "trunk": every layer but the head keeps its (init_from or model.pretrained) weights
    unfreeze_after: int | None = None  # freeze=trunk for this many epochs, then the whole network trains
    save_every_steps: int | None = None  # also checkpoint inside an epoch every N optimizer steps
    save_every_minutes: float | None = None  # ... or every M minutes (both at a step boundary)
    dist_timeout_s: float = 300.0  # seconds a process of a multi-process run waits for the others before stopping with an error
    deterministic: bool = False  # the frameworks' deterministic kernels: byte-identical reruns (see README for the cost)
    runs_dir: str = "runs"
    run_name: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tf: TFConfig = field(default_factory=TFConfig)
    torch: TorchConfig = field(default_factory=TorchConfig)
    gan: GanConfig = field(default_factory=GanConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "tf": TFConfig, "torch": TorchConfig, "gan": GanConfig}
TF_MODES = ("eager", "graph", "xla")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def _coerce(key: str, value, typ):
    """Check/convert a value against a dataclass field's annotation (given as a string)."""
    t = str(typ)
    optional = "None" in t
    if value is None:
        if optional:
            return None
        raise UserError(f"config key '{key}' cannot be empty.")
    try:
        if t.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if t.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if t.startswith("bool"):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if t.startswith("str | dict"):  # a name, a mapping, or (resolved) a list: checked by the field's own rule
            if not isinstance(value, (str, dict, list)):
                raise ValueError
            return value
        if t.startswith("str"):
            return str(value)
        if t.startswith("list"):
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [float(v) if "float" in t else int(v) for v in value]
        if t.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        raise UserError(f"config key '{key}' expects {t.replace(' | None', '')}, got {value!r}.") from None
    return value


def _unknown(key: str, choices) -> UserError:
    close = difflib.get_close_matches(key, list(choices), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(choices)}."
    return UserError(f"unknown config key '{key}'{hint}")


def apply(cfg: Config, updates: dict, prefix: str = "") -> Config:
    """Apply a nested dict of updates to cfg in place (checking every key and type)."""
    for key, value in updates.items():
        full = prefix + key
        if prefix == "" and key in SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"config key '{key}' is a section; give it as a mapping or use {key}.KEY=VALUE.")
            apply(getattr(cfg, key), value, key + ".")
            continue
        if prefix == "model." and key == "args" and isinstance(value, dict):
            cfg.args.update(value)
            continue
        if prefix == "model." and key.startswith("args."):
            cfg.args[key[5:]] = value
            continue
        names = {f.name: f for f in dataclasses.fields(cfg)}
        if key not in names:
            if prefix == "":  # a section's key given without its section: train_subset -> data.train_subset
                owners = [s for s in SECTIONS if key in {f.name for f in dataclasses.fields(getattr(cfg, s))}]
                if owners:
                    raise UserError(f"unknown config key '{key}'; did you mean '{owners[0]}.{key}'?")
            raise _unknown(full, [prefix + n for n in names])
        setattr(cfg, key, _coerce(full, value, names[key].type))
    return cfg


def parse_overrides(items: list[str]) -> dict:
    """['optim.lr=0.01', 'data.hflip=true'] -> nested dict; values are parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}' is not KEY=VALUE; write e.g. optim.lr=0.01.")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)) and not raw.lstrip().startswith(("{", "[")):
            value = raw  # a mapping or list only when written as one ({...}, [...]): `a:b` or `::x::` stays text
        parts = key.split(".")
        if parts[0] == "model" and len(parts) > 2 and parts[1] == "args":
            parts = ["model", "args." + ".".join(parts[2:])]
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; model.args entries become model.args.NAME."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def nest(key: str, value) -> dict:
    """("optim.lr", 0.1) -> {"optim": {"lr": 0.1}}, the shape `apply` takes."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


# command-line flags (argparse's names) and the config key each sets; the one translation from
# flags to config, used by every command and by resume's refusals to name the flag a user typed
FLAGS = {
    "engine": "engine", "epochs": "epochs", "batch_size": "batch_size", "seed": "seed", "device": "device",
    "runs_dir": "runs_dir", "run_name": "run_name", "deterministic": "deterministic", "freeze": "freeze",
    "unfreeze_after": "unfreeze_after", "init_from": "init_from", "save_every_steps": "save_every_steps",
    "save_every_minutes": "save_every_minutes", "model": "model.name", "data": "data.name",
    "data_dir": "data.data_dir", "channels": "data.channels", "image_size": "data.image_size",
    "skip_bad": "data.skip_bad", "optimizer": "optim.name", "lr": "optim.lr", "latent": "gan.latent",
    "judge": "gan.judge", "track": "track",
}


def flags_to_config(values: dict) -> dict:
    """The flags a command was given ({flag: value}, None or False for absent ones) as nested
    config keys. `--init-from RUN` takes every layer but the head (a new head for new data)."""
    out: dict = {}
    for flag, key in FLAGS.items():
        value = values.get(flag)
        if value is None or value is False:
            continue
        node, *path = key.split(".")
        target = out
        for part in [node, *path][:-1]:
            target = target.setdefault(part, {})
        target[key.split(".")[-1]] = list(value) if isinstance(value, tuple) else value
    if out.get("init_from"):
        out["init_head"] = False
    return out


def merge(a: dict, b: dict) -> dict:
    """Nested dicts: b's values over a's, section by section."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def flag_of(key: str) -> str:
    """How a user sets `key` on the command line: --flag where there is one, else KEY=..."""
    flags = {k: "--" + f.replace("_", "-") for f, k in FLAGS.items()}
    return flags.get(key, f"{key}=...")


MAX_YAML_NODES = 100_000  # values a YAML file may expand to, aliases counted every time they are used
MAX_YAML_DEPTH = 64  # nesting levels


def _check_yaml_size(text: str, path: Path, what: str) -> None:
    """Refuse an alias bomb (anchors that expand to millions of values) and deep nesting before the
    file is turned into Python objects."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    sizes: dict[int, int] = {}

    def size(node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise UserError(f"{what} '{path}' nests deeper than {MAX_YAML_DEPTH} levels; flatten it.")
        if id(node) not in sizes:  # an alias is the node it names: counted again at each use, computed once
            children = node.value if isinstance(node, yaml.SequenceNode) else \
                [n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode) else []
            sizes[id(node)] = 1 + sum(size(c, depth + 1) for c in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                raise UserError(f"{what} '{path}' expands to more than {MAX_YAML_NODES:,} values (anchors and "
                                "aliases used over and over); write it out plainly.")
        return sizes[id(node)]

    if root is not None:
        size(root, 0)


def read_yaml(path: Path, what: str):
    """A YAML file through the safe loader only: a tag that would construct a Python object is refused,
    and so is one that would expand beyond any config's size."""
    try:
        text = path.read_text()
        _check_yaml_size(text, path, what)
        return yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{what} '{path}' nests too deeply to read; flatten it.") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} '{path}' is not UTF-8 text; give a YAML file.") from None
    except yaml.constructor.ConstructorError as e:
        raise UserError(f"{what} '{path}' holds a tag clsf will not construct ({e.problem}); "
                        "remove it: clsf reads plain YAML values only.") from None
    except yaml.YAMLError as e:
        raise UserError(f"{what} '{path}' is not valid YAML ({str(e).splitlines()[0]}); fix the syntax.") from None


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file '{path}' " + ("is not a regular file" if p.exists() else "does not exist")
                        + "; give a YAML file.")
    data = read_yaml(p, "config file") or {}
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of keys to values.")
    return data


def need(ok: bool, msg: str) -> None:
    if not ok:
        raise UserError(msg)


def validate(cfg: Config) -> Config:
    """Every value's range and every combination that cannot work, section by section: one line each."""
    _validate_run(cfg)
    _validate_optim(cfg.optim, cfg.epochs)
    _validate_data(cfg.data)
    g = cfg.gan
    need(1 <= g.latent <= 4096, f"gan.latent={g.latent} must be in [1, 4096].")
    need(0 < g.d_lr < math.inf and 0 < g.g_lr < math.inf, "gan.d_lr and gan.g_lr must be finite numbers > 0.")
    need(0 <= g.label_noise <= 0.5, f"gan.label_noise={g.label_noise} must be in [0, 0.5] (noise on 0/1 labels).")
    need(g.sample_every >= 1, f"gan.sample_every={g.sample_every} must be at least 1 (steps).")
    return cfg


def _validate_run(cfg: Config) -> None:
    need(cfg.engine in engine_names(), f"engine '{cfg.engine}' is not known; use one of {', '.join(engine_names())}.")
    need(cfg.freeze in (None, "trunk"), f"freeze '{cfg.freeze}' is not known; use trunk (or leave it out).")
    need(cfg.freeze is None or cfg.init_from or cfg.model.pretrained, "freeze=trunk keeps the weights init_from or "
         "model.pretrained loads; give --init-from RUN or model.pretrained=imagenet|FILE too.")
    need(not (cfg.init_from and cfg.model.pretrained), "init_from and model.pretrained both choose the starting weights; "
         "give one of them.")
    need(not (cfg.model.whiten_init and (cfg.init_from or cfg.model.pretrained)),
         "model.whiten_init sets the first layer from the data, which init_from or model.pretrained would replace; "
         "give one of them.")
    need(cfg.unfreeze_after is None or (cfg.freeze == "trunk" and cfg.unfreeze_after >= 1),
         f"unfreeze_after={cfg.unfreeze_after} needs freeze=trunk and at least 1 frozen epoch; give --freeze trunk, or leave it out.")
    need(cfg.unfreeze_after is None or cfg.unfreeze_after < cfg.epochs, f"unfreeze_after={cfg.unfreeze_after} leaves no "
         f"epoch to train every layer in ({cfg.epochs} in all); give more --epochs, or freeze=trunk alone.")
    need(cfg.optim.unfreeze_lr is None or cfg.unfreeze_after, "optim.unfreeze_lr is the rate once the trunk unfreezes; "
         "give unfreeze_after (and freeze=trunk) too, or leave it out.")
    need(cfg.precision in PRECISIONS, f"precision '{cfg.precision}' is not known; use one of {', '.join(PRECISIONS)}.")
    need(cfg.tf.mode in TF_MODES, f"tf.mode '{cfg.tf.mode}' is not known; use one of {', '.join(TF_MODES)}.")
    need(1 <= cfg.epochs <= MAX_EPOCHS, f"epochs={cfg.epochs} must be in [1, {MAX_EPOCHS:,}].")
    need(0 <= cfg.seed < 2**32, f"seed={cfg.seed} must be in [0, 2**32) (every framework's seed range).")
    need(cfg.run_name is None or (cfg.run_name.strip() and not cfg.run_name.startswith(".")
                                  and "/" not in cfg.run_name and "\\" not in cfg.run_name),
         f"run_name '{cfg.run_name}' must be a plain folder name (no / or \\, not starting with a dot); "
         "choose where runs go with --runs-dir.")
    for key in ("run_name", "runs_dir"):  # folder names written into logs, JSON and TensorBoard: text, not raw bytes
        value = getattr(cfg, key)
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError:
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UserError(f"{key} '{shown}' is not valid UTF-8 text; choose a name without such bytes.") from None
    need(cfg.batch_size >= 1, f"batch_size={cfg.batch_size} must be at least 1.")
    need(cfg.dist_timeout_s > 0, f"dist_timeout_s={cfg.dist_timeout_s} must be > 0 (seconds).")
    need(cfg.eval_batch_size >= 1, f"eval_batch_size={cfg.eval_batch_size} must be at least 1.")
    need(cfg.early_stop_patience is None or cfg.early_stop_patience >= 1, "early_stop_patience must be >= 1 (or null to turn it off).")
    need(cfg.save_every_steps is None or cfg.save_every_steps >= 1, f"save_every_steps={cfg.save_every_steps} must be >= 1 (or null).")
    need(cfg.save_every_minutes is None or cfg.save_every_minutes > 0, f"save_every_minutes={cfg.save_every_minutes} must be > 0 (or null).")
    need(cfg.track in (None, "mlflow"), f"track '{cfg.track}' is not known; use mlflow (or leave it out).")
    need(cfg.track_uri is None or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://\S*|[^:\s][^:]*", cfg.track_uri) is not None,
         f"track_uri '{cfg.track_uri}' is not a tracking URI; give one like sqlite:///PATH/mlflow.db, "
         "http://HOST:PORT or file:///PATH, or a folder path.")
    need(0 <= cfg.tta_shift <= 8, f"tta_shift={cfg.tta_shift} must be in [0, 8] pixels (airbench shifts by 1).")


def _validate_optim(o: OptimConfig, epochs: int) -> None:
    need(o.name in OPTIMIZERS, f"optimizer '{o.name}' is not known; use one of {', '.join(OPTIMIZERS)}.")
    need(0 < o.lr < math.inf, f"optim.lr={o.lr} must be a finite number > 0.")
    need(o.schedule in SCHEDULES, f"optim.schedule '{o.schedule}' is not known; use one of {', '.join(SCHEDULES)}.")
    need(0 <= o.label_smoothing < 1, f"optim.label_smoothing={o.label_smoothing} must be in [0, 1).")
    need(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be >= 0.")
    need(0 <= o.ema < 1, f"optim.ema={o.ema} must be in [0, 1) (a decay per update, e.g. 0.99; 0 turns the average off).")
    need(o.ema_every >= 1, f"optim.ema_every={o.ema_every} must be >= 1 (optimizer steps between EMA updates).")
    need(o.ema_power >= 0, f"optim.ema_power={o.ema_power} must be >= 0 (0: the usual warm-up; airbench ramps with 3).")
    need(o.ema > 0 or not (o.lookahead or o.ema_power), "optim.lookahead and optim.ema_power shape the weight average; "
         "give optim.ema too (e.g. optim.ema=0.99), or leave them out.")
    need(0 <= o.muon_lr < math.inf, f"optim.muon_lr={o.muon_lr} must be a finite number >= 0 (0 turns Muon off).")
    need(0 <= o.muon_momentum < 1, f"optim.muon_momentum={o.muon_momentum} must be in [0, 1).")
    need(o.clip_norm is None or o.clip_norm > 0, f"optim.clip_norm={o.clip_norm} must be > 0 (or null).")
    from clsf.techniques import class_weights

    class_weights.check(o.class_weight)
    need(0 <= o.momentum < 1 and 0 < o.rho < 1 and 0 < o.beta1 < 1 and 0 < o.beta2 < 1,
         "optim.momentum must be in [0, 1) and rho/beta1/beta2 in (0, 1).")
    need(o.eps > 0, "optim.eps must be > 0.")
    need(0 <= o.warmup_epochs <= epochs, f"optim.warmup_epochs={o.warmup_epochs} must lie in [0, epochs].")
    need(o.step_epochs >= 1 and 0 < o.gamma <= 1, "optim.step_epochs must be >= 1 and optim.gamma in (0, 1].")
    need(0 <= o.min_lr < o.lr, f"optim.min_lr={o.min_lr} must be in [0, lr).")
    need(o.unfreeze_lr is None or 0 < o.unfreeze_lr < math.inf, f"optim.unfreeze_lr={o.unfreeze_lr} must be a finite "
         "number > 0 (the peak rate once the trunk unfreezes), or null.")


def _validate_data(d: DataConfig) -> None:
    from clsf.data.transforms import Preprocess
    from clsf.techniques import BATCH

    for technique in BATCH:  # each batch technique checks its own fields (clsf.techniques.batch)
        technique.check(d)
    Preprocess.of(d).validate()
    need(d.image_size is None or (len(d.image_size) == 2 and min(d.image_size) > 0), "data.image_size must be [H, W].")
    need(d.image_size is None or max(d.image_size) <= MAX_IMAGE_SIDE,
         f"data.image_size {d.image_size} is larger than {MAX_IMAGE_SIDE} pixels a side; resize to at most that.")
    need(d.channels in (None, 1, 3), "data.channels must be 1 or 3.")
    need(d.workers is None or d.workers >= 0, f"data.workers={d.workers} must be >= 0 (0: decode in the training process).")
    need(not (d.stream and d.image_size), "data.stream=true reads images at their own size; resize the folder once, "
                                          "or load it in memory to use data.image_size (data.stream=false).")
    need(0 <= d.val_split < 1, f"data.val_split={d.val_split} must be in [0, 1) (a fraction of the training split).")
    need(0 <= d.test_split < 1, f"data.test_split={d.test_split} must be in [0, 1) (a share of a dataset without test "
                                "images held out to test on; 0 turns it off).")
    need(all(v is None or v >= 1 for v in (d.train_subset, d.val_subset, d.test_subset)),
         "data.train_subset/val_subset/test_subset must be >= 1 (or null for all).")
    need(d.crop_padding <= MAX_CROP_PADDING, f"data.crop_padding={d.crop_padding} must be at most {MAX_CROP_PADDING} pixels.")


def build_config(config_file: str | None = None, flags: dict | None = None, overrides: list[str] | None = None,
                 recipe: str | None = None) -> Config:
    """Defaults <- named recipe <- YAML file <- command-line flags <- key=value overrides; then validate."""
    cfg = Config()
    if recipe:
        from clsf.recipes import recipe_path

        apply(cfg, load_yaml(recipe_path(recipe)))
    if config_file:
        apply(cfg, load_yaml(config_file))
    if flags:
        apply(cfg, flags)
    if overrides:
        apply(cfg, parse_overrides(overrides))
    return validate(cfg)


def from_dict(d: dict) -> Config:
    return validate(apply(Config(), d))
