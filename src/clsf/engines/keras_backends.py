"""Engines `keras-jax` and `keras-torch`: Keras compile + fit on Keras 3's JAX and PyTorch backends.

The same Keras model, optimizer, loss and schedule as the `keras` engine (keras_common: the
optimizer's epsilon, momentum rule, decoupled decay and clipping, label smoothing on one-hot
targets, the epoch-window learning rate), built from the same spec; only the backend differs.
Keras reads its backend once per process (KERAS_BACKEND, set here before the import), so each of
these engines runs in a process of its own — which the clsf command, compare and sweep give it —
and refuses in one line where Keras already runs on another backend.

Feeding uses no TensorFlow: numpy batches from the shared epoch plan (clsf.data.numpy_pipeline)
through a keras.utils.PyDataset, so order, crops and flips are the other engines' exactly.

Where a backend keeps state away from the Keras variables — JAX's fit holds the model and
optimizer state as arrays and detaches ("purges") the variables until the epoch ends — the engine
syncs it back before reading weights or the step counter (a mid-epoch checkpoint, Ctrl-C).
One process, one replica: --nproc is refused (use --engine tf or torch for several processes). On
JAX, freeze=trunk trains the head with an optimizer built over the head alone (Keras' JAX trainer
updates exactly the variables its optimizer holds), so unfreeze_after is refused there.
"""

from __future__ import annotations

import os

import numpy as np

from clsf.config import Config
from clsf.distributed import World
from clsf.engines.base import Engine, Meter
from clsf.engines.precision import resolve_precision
from clsf.engines.keras_common import MIXED, freeze_trunk, load_state, make_optimizer, save_state, schedule
from clsf.errors import UserError
from clsf.frameworks import import_keras
from clsf.models.spec import ModelSpec


class KerasBackendEngine(Engine):
    backend: str  # Keras' name for it: "jax" | "torch"
    streams_across_replicas = False
    optimizer_sees_only_trainable = False  # the backend's trainer applies gradients to exactly the built variables

    def __init__(self, cfg: Config, spec: ModelSpec, steps_per_epoch: int):
        super().__init__(cfg, spec, steps_per_epoch)
        self.place(cfg.device)  # environment the backend reads at import: device, determinism
        keras = import_keras(self.backend)
        from clsf.models.keras import build_keras

        self.world = World()
        keras.utils.set_random_seed(cfg.seed)  # python, numpy and the backend's seeds: initial weights, dropout
        self.device = self.find_device()
        self.check_device(cfg.device)
        self.precision = resolve_precision(cfg, self.device != "cpu", self.device, self.cpu_kernels_bf16)
        keras.mixed_precision.set_global_policy(MIXED[self.precision])  # around this model only, as in `keras`
        try:
            self.model = build_keras(spec, self.dropout_seed(cfg.seed))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        self.schedule = schedule(cfg, steps_per_epoch)
        self.optimizer = make_optimizer(cfg.optim, self.schedule)
        if self.precision == "fp16":
            self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
        if self.optimizer_sees_only_trainable:
            if cfg.unfreeze_after is not None:
                raise UserError(f"unfreeze_after is not available with {self.name}: Keras' {self.backend} trainer updates "
                                "exactly the variables its optimizer was built with, so a frozen trunk cannot join later; "
                                "use freeze=trunk alone here, or --engine keras, keras-torch, tf or torch to unfreeze.")
            freeze_trunk(self.model, cfg, spec, True)  # the optimizer is built over the head alone
        self.optimizer.build(self.model.trainable_variables)  # else: slots for every variable, frozen or not
        self.schedule.attach(getattr(self.optimizer, "inner_optimizer", self.optimizer))  # state JAX's step is handed
        freeze_trunk(self.model, cfg, spec, True)
        self.traces = {"train_step": 0}
        mode = cfg.tf.mode  # eager: no compilation; xla: compiled; graph (default): the backend's default
        self.jit = {"eager": False, "xla": True}.get(mode, "auto")
        # "auto": JAX compiles the step with XLA, the torch backend runs it eagerly (as torch does)
        self.counts_traces = self.backend == "jax" and self.jit is not False
        real_train_step, traces = self.model.train_step, self.traces

        def train_step(*args):  # under jax.jit this Python runs once per tracing: the count is its traces
            traces["train_step"] += 1
            return real_train_step(*args)

        if self.counts_traces:
            self.model.train_step = train_step
        self.model.compile(optimizer=self.optimizer, loss=self.loss.keras(soft=self.pre.soft_labels),
                           metrics=["acc"], run_eagerly=mode == "eager", jit_compile=self.jit)

    # -- the backend ---------------------------------------------------------------------------
    def place(self, device: str) -> None: ...  # each backend: environment variables read at import
    def find_device(self) -> str: ...  # each backend: where the model runs, e.g. "cpu", "gpu:0", "cuda:0"

    def dropout_seed(self, seed: int) -> int | None:  # each backend: see build_keras
        return None

    def sync(self) -> None:
        """The backend's live state into the Keras variables (JAX's fit keeps it apart)."""
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()

    # -- training ----------------------------------------------------------------------------
    def unfreeze(self) -> None:
        self.sync()
        freeze_trunk(self.model, self.cfg, self.spec, False)
        self.model.make_train_function(force=True)  # the step is built again for the new trainable set

    def train_epoch(self, x, y, epoch, meter: Meter, first_step: int = 0) -> None:
        import keras

        from clsf.data.numpy_pipeline import NumpyBatches

        self.schedule.fill(self.global_step())
        batches = NumpyBatches(x, y, self.cfg.batch_size, self.pre, True, self.cfg.seed, epoch, first_step,
                               self.classes)
        model = self.model

        class Feed(keras.utils.PyDataset):  # batch i of the plan, in order, in this process
            def __len__(self):
                return len(batches)

            def __getitem__(self, i):
                return batches[i]

        def batch_end(batch, logs):  # fit counts batches from its own start: offset them
            meter.running(first_step + batch, float(logs["loss"]), float(logs["acc"]))
            if meter.stop_requested:
                model.stop_training = True  # fit checks it after every batch

        report = keras.callbacks.LambdaCallback(on_train_batch_end=batch_end)
        # the batches are already in this epoch's order (clsf.data.order): fit must not reshuffle them
        self.model.fit(Feed(), epochs=epoch + 1, initial_epoch=epoch, verbose=0, callbacks=[report], shuffle=False)

    def global_step(self) -> int:
        self.sync()
        return int(np.asarray(self.optimizer.iterations.numpy()))

    def set_global_step(self, step: int) -> None:
        self.sync()
        self.optimizer.iterations.assign(step)

    def diagnostics(self, detail: bool = False) -> dict[str, dict]:
        return {k: {"traces": n, "graph_nodes": None} for k, n in self.traces.items()} if self.counts_traces else {}

    # -- inference ---------------------------------------------------------------------------
    def _batches(self, x):
        from clsf.data.numpy_pipeline import NumpyBatches

        batches = NumpyBatches(x, np.zeros(len(x), np.int64), self.cfg.eval_batch_size, self.pre, False)
        return (batches[i][0] for i in range(len(batches)))  # (B, H, W, C) float32, normalised

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        self.sync()
        return np.concatenate([np.asarray(self.model.predict_on_batch(xb), np.float32) for xb in self._batches(x)])

    def features(self, x: np.ndarray) -> np.ndarray:
        """(N, D): the input of the last layer (a model cut before it), in eval_batch_size chunks."""
        import keras

        self.sync()
        body = keras.Model(self.model.inputs, self.model.layers[-2].output)
        return np.concatenate([np.asarray(body.predict_on_batch(xb), np.float32).reshape(len(xb), -1)
                               for xb in self._batches(x)])

    def weights(self) -> dict:
        from clsf.models.transfer import keras_weights

        self.sync()
        return keras_weights(self.model, self.spec)

    def set_weights(self, weights: dict) -> None:
        from clsf.models.transfer import set_keras_weights

        self.sync()
        set_keras_weights(self.model, self.spec, weights)

    # -- checkpoints: the `keras` engine's files (neutral weights + every variable) -------------------
    def save(self, ckpt) -> None:
        self.sync()
        save_state(self.model, self.optimizer, self.spec, ckpt)

    def load(self, ckpt, training_state: bool = True, only: set[str] | None = None) -> None:
        self.sync()
        load_state(self.model, self.optimizer, self.spec, ckpt, training_state, only)


class KerasJaxEngine(KerasBackendEngine):
    name, backend = "keras-jax", "jax"
    optimizer_sees_only_trainable = True
    # XLA's CPU backend computes a bf16 convolution in float32 between casts: on an AMD EPYC with
    # AVX-512 BF16, speedrun-muon's step at batch 500 took 2.77 s in bf16 against 2.73 in fp32, where
    # tf's ran 1.33x and keras-torch's 1.52x as fast in bf16 (bench/results/step-profile-engines-avx512-bf16.md).
    # So precision=auto stays fp32 here on a CPU; precision=bf16 still runs (its numbers, not speed).
    cpu_kernels_bf16 = False

    def __init__(self, cfg: Config, spec: ModelSpec, steps_per_epoch: int):
        super().__init__(cfg, spec, steps_per_epoch)
        if self.device == "cpu":  # before fit traces the step: XLA's CPU max-pool gradient is slow (jax_kernels)
            from clsf.engines import jax_kernels

            jax_kernels.install()

    def place(self, device: str) -> None:
        from clsf.engines import jax_kernels

        if device == "cpu":
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ["XLA_FLAGS"] = jax_kernels.xla_flags(os.environ.get("XLA_FLAGS", ""))  # CPU convolutions: Eigen's
        if self.cfg.deterministic:  # XLA's GPU kernels in a fixed reduction order (the CPU's already are)
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()

    def find_device(self) -> str:
        import jax

        return "cpu" if jax.default_backend() == "cpu" else "gpu:0"

    def environment(self) -> dict:
        import jax

        from clsf.engines import jax_kernels

        return {"jax": {"version": jax.__version__, "devices": [str(d) for d in jax.devices()],
                        "conv_pool_gradients": jax_kernels.gradients(),  # {"conv": "xla", "max_pool": "clsf"}
                        "xla_flags": os.environ.get("XLA_FLAGS", "")}}


class KerasTorchEngine(KerasBackendEngine):
    name, backend = "keras-torch", "torch"

    def __init__(self, cfg: Config, spec: ModelSpec, steps_per_epoch: int):
        super().__init__(cfg, spec, steps_per_epoch)
        from clsf.engines import torch_kernels  # Keras' convolutions copy each map twice (torch_kernels)

        torch_kernels.install()

    def place(self, device: str) -> None:
        if device != "auto":
            os.environ.setdefault("KERAS_TORCH_DEVICE", device)

    def find_device(self) -> str:
        import torch

        torch.use_deterministic_algorithms(self.cfg.deterministic)  # this run's setting, not an earlier run's
        from keras.src.backend.torch.core import get_device

        return str(get_device())

    def dropout_seed(self, seed: int) -> int:
        """Keras' torch backend draws an unseeded Dropout's masks from torch's global generator (its
        fast path), which fit's data loader also draws from once per call: a run resumed inside an
        epoch would get other masks. Seeded, each layer draws from its own seed state, a model
        variable that checkpoints carry (bench/results/observations.md, O5)."""
        return seed

    def environment(self) -> dict:
        import torch

        from clsf.engines import torch_kernels

        return {"threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
                "torch": {"version": torch.__version__, "conv_pool": "clsf" if torch_kernels.installed() else "keras"}}
