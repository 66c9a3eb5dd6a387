"""What the Keras engines share: the optimizer with clsf's unified hyperparameters, the
learning-rate schedule, the loss on logits and checkpoint state (backend-free: `keras`, `tf` and
the Keras engines on JAX and PyTorch, keras_backends.py); and, for the two TensorFlow engines,
KerasBase: the model under tf.distribute, prediction in batches and trace counting.

The optimizers are Keras' own (the torch engine copies their rules, see torch_optim.py):
  sgd      v = momentum*v - lr*g; w += v   (momentum 0.9 by default, optim.momentum; nesterov optional)
  adam     beta1 0.9, beta2 0.999, eps 1e-7 on the raw root: w -= lr_t * m / (sqrt(v) + eps)
  adamw    adam with weight decay
  rmsprop  rho 0.9: w -= lr * g / sqrt(v + eps)
Weight decay is decoupled for every optimizer (w -= lr * weight_decay * w, on every variable, before
the update); gradients are clipped first, by global L2 norm (optim.clip_norm). With optim.muon_lr the
convolution kernels step by Muon instead (clsf.techniques.muon).
"""

from __future__ import annotations

import contextlib
import zipfile

import numpy as np

from clsf.config import Config, OptimConfig
from clsf.distributed import World, tf_world
from clsf.engines.base import Engine, frozen_layers
from clsf.engines.checkpoint import damaged_state, missing_state
from clsf.engines.precision import resolve_precision
from clsf.engines.checkpoint import Checkpoint
from clsf.engines.schedule import lr_at
from clsf.errors import PeerLost, UserError
from clsf.frameworks import import_keras
from clsf.models.spec import MaxPool, ModelSpec, walk


MIXED = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}  # Keras dtype policies


def make_optimizer(o: OptimConfig, learning_rate):
    import keras

    common = dict(learning_rate=learning_rate, global_clipnorm=o.clip_norm, weight_decay=o.weight_decay or None)
    if o.name == "sgd":
        cls, args = keras.optimizers.SGD, dict(momentum=o.momentum, nesterov=o.nesterov)
    elif o.name in ("adam", "adamw"):  # Keras 3's AdamW is Adam with weight_decay set
        cls, args = keras.optimizers.Adam, dict(beta_1=o.beta1, beta_2=o.beta2, epsilon=o.eps)
    else:
        cls, args = keras.optimizers.RMSprop, dict(rho=o.rho, epsilon=o.eps, momentum=0.0)
    if o.muon_lr:  # convolution kernels by Muon (clsf.techniques.muon)
        from clsf.techniques import muon

        cls = muon.keras_class(cls, o.muon_lr / o.lr, o.muon_momentum)
    return cls(**args, **common)


def schedule(cfg: Config, steps_per_epoch: int):
    """clsf's schedule (`lr_at`, a pure function of the global step) as a Keras schedule the graph
    reads from the optimizer's own step counter: no Python per step, and a restored step counter
    restores the rate. It holds one epoch's rates at a time (a variable of steps_per_epoch float32,
    computed in float64 like the torch engine's), refilled by `fill(step)` as an epoch starts — so
    memory does not grow with the number of epochs. A step past the window takes its last rate."""
    import keras

    n = max(1, steps_per_epoch)

    class EpochWindow(keras.optimizers.schedules.LearningRateSchedule):
        def attach(self, optimizer=None) -> None:
            """Make the window's variables: free ones (TensorFlow's graphs read a variable where it
            lives), or the optimizer's own (`optimizer`, built): JAX's compiled step sees only the
            state it is handed — the model's and the optimizer's variables — and would keep a
            free variable's first value as a constant."""
            new = optimizer.add_variable if optimizer is not None else (
                lambda shape, dtype, name: keras.Variable(np.zeros(shape, dtype), trainable=False, name=name))
            self.table = new(shape=(n,), dtype="float32", name="lr_window")  # (n,) rates, one per step
            self.start = new(shape=(), dtype="int32" if optimizer is not None else "int64", name="lr_window_start")

        def __call__(self, step):  # step: the optimizer's counter; table[0] is global step `start`
            i = keras.ops.clip(keras.ops.cast(step, self.start.dtype) - self.start, 0, n - 1)
            return keras.ops.take(self.table, i)

        def fill(self, step: int) -> None:
            self.start.assign(step)
            self.table.assign(np.array([lr_at(step + i, steps_per_epoch, cfg.epochs, cfg.optim, cfg.unfreeze_after)
                                        for i in range(n)],
                                       np.float32))

        def get_config(self):
            return {}

    return EpochWindow()


def make_strategy(cfg: Config, world: World):
    """tf.distribute's strategy for the replicas `world` counts: MultiWorkerMirroredStrategy across
    TF_CONFIG's workers (collectives time out after dist_timeout_s), MirroredStrategy over one
    machine's GPUs, else TF's default (no distribution)."""
    import tensorflow as tf

    if world.processes > 1:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=cfg.dist_timeout_s)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    elif world.size > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        return tf.distribute.get_strategy()
    if cfg.precision == "fp16":  # the replicated step does not scale its loss (LossScaleOptimizer would unscale it)
        raise UserError(f"precision=fp16 is not available with {world.size} TensorFlow replicas; use precision=bf16, "
                        "or the torch engine.")
    if cfg.optim.clip_norm:  # Keras clips each replica's gradient before the replicas' sum
        raise UserError(f"optim.clip_norm with {world.size} TensorFlow replicas would clip each replica's share of the "
                        "gradient (Keras' order), not the batch's; drop optim.clip_norm or use the torch engine.")
    return strategy


@contextlib.contextmanager
def collective(what: str):
    """A worker of a MultiWorkerMirroredStrategy run that died (its heartbeats stop: bench/results/
    observations.md, O6) or stopped answering (dist_timeout_s) inside the block becomes one clear line,
    as torch's `clsf.distributed.torch_ddp.collective` does."""
    import tensorflow as tf

    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError, tf.errors.CancelledError)
    try:
        yield
    except lost as e:
        raise PeerLost(f"another process stopped answering while {what} ({_lost_cause(str(e.message))})") from None


def _lost_cause(message: str) -> str:
    """The gist of TF's collective error, which opens with "Graph execution error:" and a stack."""
    import re

    if "stopped sending heartbeats" in message:  # the coordination service names the dead workers
        tasks = sorted(set(re.findall(r"/job:worker/replica:\d+/task:(\d+)\s*$", message, re.M)), key=int)
        if tasks:
            return f"worker {', '.join(tasks)} stopped sending heartbeats"
    lines = [re.sub(r"\{\{.*?\}\}", "", line).strip() for line in message.splitlines()]
    said = [line for line in lines if any(k in line for k in ("aborted", "Connection", "Deadline", "timed out"))]
    return ((said or [line for line in lines if line]) or ["no detail"])[0][:160]


class KerasBase(Engine):
    """Model, optimizer, schedule, prediction and checkpoints for the two TensorFlow engines."""

    streams_across_replicas = False  # streamed files train on one TensorFlow replica

    @property
    def cpu_kernels_bf16(self) -> bool:
        """Whether this process's TensorFlow convolves bf16 on the CPU's bf16 units: oneDNN's kernels
        do; Eigen's, which a network under 8 channels wide keeps (tf_kernels.choose_tf_kernels), do
        not: on an AMD EPYC with AVX-512 BF16 speedrun-muon's step ran 10.6x slower in bf16 than in
        fp32 with Eigen's, 1.41x faster with oneDNN's (bench/results/step-profile-tf-eigen-bf16-avx512-bf16.md).
        So `auto` stays fp32 in a process on Eigen's kernels; precision=bf16 still runs there."""
        from clsf.engines.tf_kernels import onednn_enabled

        return onednn_enabled()

    @classmethod
    def detect_world(cls) -> World:
        return tf_world()  # TF_CONFIG's workers x this machine's GPUs; one replica otherwise

    def __init__(self, cfg: Config, spec: ModelSpec, steps_per_epoch: int):
        super().__init__(cfg, spec, steps_per_epoch)
        keras = import_keras("tensorflow")
        import tensorflow as tf

        from clsf.models.keras import build_keras

        self.world = self.detect_world()
        self.strategy = make_strategy(cfg, self.world)  # first: MultiWorkerMirroredStrategy must precede other TF work
        keras.utils.set_random_seed(cfg.seed)  # python, numpy and TF seeds: initial weights, dropout
        deterministic_kernels(tf, cfg, spec)
        self.device = "gpu:0" if tf.config.list_logical_devices("GPU") else "cpu"
        self.check_device(cfg.device)
        if self.device == "cpu":  # Keras' batch norm and gelu: separate passes over the map, not one kernel (tf_kernels)
            from clsf.engines.tf_kernels import install_fused_batch_norm, install_gelu

            install_fused_batch_norm()
            install_gelu()
        self.precision = resolve_precision(cfg, self.device != "cpu", self.device, self.cpu_kernels_bf16)
        # mixed precision: layers compute in bf16/fp16 with float32 weights (Keras' dtype policy, which
        # each layer takes when built: set around this model only); fp16 scales the loss so small
        # gradients survive
        keras.mixed_precision.set_global_policy(MIXED[self.precision])
        try:
            with self.strategy.scope():  # variables mirrored on every replica
                self.model = build_keras(spec)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        with self.strategy.scope():
            self.schedule = schedule(cfg, steps_per_epoch)
            self.schedule.attach()
            self.optimizer = make_optimizer(cfg.optim, self.schedule)
            if self.precision == "fp16":
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.model.trainable_variables)  # slots for every variable, frozen or not
        self.freeze_trunk(True)
        self.loss_fn = self.loss.keras(soft=self.pre.soft_labels)  # the batch mean (clsf.techniques.loss)
        self.traces = {"train_step": 0, "predict_step": 0}  # Python side effects run once per tracing

        h, w, c = spec.input_shape
        model, traces = self.model, self.traces

        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32)])  # any batch size, one trace
        def predict_step(x):
            traces["predict_step"] += 1
            return tf.cast(model(x, training=False), tf.float32)  # (B, K) logits

        self.predict_step = predict_step

    def freeze_trunk(self, frozen: bool) -> None:
        freeze_trunk(self.model, self.cfg, self.spec, frozen)

    def unfreeze(self) -> None:
        """The trunk trains from the next step. A traced step holds the trainable variables it was
        traced with, so the step is traced once more (the one retrace the loop expects)."""
        self.freeze_trunk(False)
        self.new_train_step()

    def new_train_step(self) -> None: ...  # each engine: (re)build the step that training calls

    def start_epoch(self) -> None:
        """The learning rates of the steps ahead, from where the step counter stands (epoch start or a
        mid-epoch resume point)."""
        self.schedule.fill(self.global_step())

    def replica_batches(self, x, y, epoch: int, first_step: int):
        """Under tf.distribute: the epoch's batches as each replica's share, fed per input pipeline
        (one per worker; its replicas are consecutive global replica ids)."""
        from clsf.data.tf_pipeline import make_replica_dataset

        total = self.world.size

        def pipeline(ctx):
            local = total // ctx.num_input_pipelines
            first = ctx.input_pipeline_id * local
            return make_replica_dataset(x, y, self.cfg.batch_size, self.pre, self.cfg.seed, epoch, first_step,
                                        range(first, first + local), total)

        return self.strategy.distribute_datasets_from_function(pipeline)

    def global_step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def set_global_step(self, step: int) -> None:
        """The schedule's position, for a run resumed with another number of processes (the steps per
        epoch changed). Keras' one step counter also drives Adam's bias correction (near 1 by then)."""
        self.optimizer.iterations.assign(step)

    def diagnostics(self, detail: bool = False) -> dict[str, dict]:
        """Per tf.function the engine owns: times traced, and (detail) the size of its graph (nodes,
        the function library included) where the function has one signature to ask for."""
        out = {}
        for name, n in self.traces.items():
            fn = getattr(self, name, None)
            nodes = None
            if detail and n and hasattr(fn, "get_concrete_function") and getattr(fn, "input_signature", None) is not None:
                g = fn.get_concrete_function().graph.as_graph_def()
                nodes = len(g.node) + sum(len(f.node_def) for f in g.library.function)
            out[name] = {"traces": n, "graph_nodes": nodes}
        return out

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        from clsf.data.tf_pipeline import make_dataset

        ds = make_dataset(x, np.zeros(len(x), np.int64), self.cfg.eval_batch_size, self.pre, training=False)
        return np.concatenate([self.predict_step(xb).numpy() for xb, _ in ds])

    def features(self, x: np.ndarray) -> np.ndarray:
        """(N, D): the input of the last layer (a model cut before it), in eval_batch_size chunks."""
        import keras

        from clsf.data.tf_pipeline import make_dataset

        body = keras.Model(self.model.inputs, self.model.layers[-2].output)
        ds = make_dataset(x, np.zeros(len(x), np.int64), self.cfg.eval_batch_size, self.pre, training=False)
        return np.concatenate([body(xb, training=False).numpy().reshape(len(xb), -1) for xb, _ in ds])

    def environment(self) -> dict:
        import tensorflow as tf

        from clsf.engines.tf_kernels import fused_batch_norm_installed, gelu_installed

        return {"threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "auto",
                            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "auto"},
                "batch_norm": "fused" if fused_batch_norm_installed() else "keras",
                "gelu": "clsf" if gelu_installed() else "keras"}

    def export(self, fmt, path, a, b, probabilities, example) -> None:
        """The Keras model behind a normalising input layer, as .keras or a SavedModel."""
        import keras

        h, w, c = self.spec.input_shape
        images = keras.Input((h, w, c), name="images")
        x = keras.layers.Rescaling(scale=a, offset=b, name="normalise")(images)  # raw * a + b, per channel
        out = self.model(x, training=False)
        if probabilities:
            out = keras.layers.Softmax(name="probabilities")(out)
        model = keras.Model(images, out, name="clsf_export")
        if fmt == "keras":
            model.save(path)
        else:
            from clsf.engines.tf_kernels import keras_own_gelu

            with keras_own_gelu():  # the graph kept holds TensorFlow's own ops, no XLA-compiled function
                model.export(str(path), format="tf_saved_model", verbose=False)

    def weights(self) -> dict:
        from clsf.models.transfer import keras_weights

        return keras_weights(self.model, self.spec)

    def set_weights(self, weights: dict) -> None:
        from clsf.models.transfer import set_keras_weights

        set_keras_weights(self.model, self.spec, weights)

    def save(self, ckpt: Checkpoint) -> None:
        save_state(self.model, self.optimizer, self.spec, ckpt)

    def load(self, ckpt: Checkpoint, training_state: bool = True, only: set[str] | None = None) -> None:
        load_state(self.model, self.optimizer, self.spec, ckpt, training_state, only)


def deterministic_kernels(tf, cfg: Config, spec: ModelSpec) -> None:
    """TensorFlow's deterministic kernels for this run or not, as its config says: the switch is the
    process's, so an earlier run's setting is undone. A model TensorFlow has no deterministic XLA
    gradient for is refused in one line, not at its first step."""
    pools = [name for name, layer in walk(spec.layers) if isinstance(layer, MaxPool)]
    if cfg.deterministic and cfg.tf.mode == "xla" and pools:
        raise UserError(f"deterministic=true with tf.mode=xla: TensorFlow has no deterministic XLA gradient for max "
                        f"pooling ({pools[0]}); use tf.mode=graph (deterministic too) or deterministic=false.")
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()  # deterministic kernels, or an error where none exists
    else:
        from tensorflow.python.framework import config

        getattr(config, "disable_op_determinism", lambda: None)()  # not public API in TF 2.21; absent: left as is


def freeze_trunk(model, cfg: Config, spec: ModelSpec, frozen: bool) -> None:
    """freeze=trunk: every layer but the head keeps its weights; Keras runs a batch norm that is
    not trainable in inference mode (moving statistics used, not updated). Every Keras engine."""
    for name in frozen_layers(cfg, spec):
        model.get_layer(name).trainable = not frozen


# -- checkpoints: neutral weights + every model/optimizer variable (dropout's seed state included),
#    the same files on every Keras backend
def save_state(model, optimizer, spec: ModelSpec, ckpt: Checkpoint) -> None:
    from clsf.models.transfer import keras_weights, save_npz

    save_npz(ckpt.weights, keras_weights(model, spec))
    state = {f"model/{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    state.update({f"optim/{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
    np.savez(ckpt.state("npz"), **state)


def load_state(model, optimizer, spec: ModelSpec, ckpt: Checkpoint, training_state: bool = True,
               only: set[str] | None = None) -> None:
    """Weights (only those, without training_state), or every variable."""
    from clsf.models.transfer import load_npz, set_keras_weights

    if not training_state:
        set_keras_weights(model, spec, load_npz(ckpt.weights), only)
        return
    path = ckpt.state("npz")
    if not path.exists():
        raise missing_state(path)
    variables = [("model", i, v) for i, v in enumerate(model.variables)]
    variables += [("optim", i, v) for i, v in enumerate(optimizer.variables)]
    try:
        with np.load(path, allow_pickle=False) as z:
            if len(z.files) != len(variables):
                raise UserError(f"{ckpt} holds {len(z.files)} model/optimizer variables but this model and optimizer "
                                f"have {len(variables)}; it was written by another model, optimizer, engine or clsf version.")
            values = [z[f"{part}/{i}"] for part, i, _ in variables]
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise damaged_state(path, f"{type(e).__name__}: {e}") from None
    for (_, _, v), value in zip(variables, values):
        if tuple(v.shape) != value.shape:
            raise damaged_state(path, f"a variable of shape {value.shape} where {tuple(v.shape)} belongs")
        v.assign(value.astype(v.dtype) if value.dtype != np.dtype(v.dtype) else value)
