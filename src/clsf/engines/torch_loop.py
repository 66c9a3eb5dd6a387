"""Engine `torch`: the PyTorch loop, read top to bottom.

What the seed script got wrong and this loop gets right: the model outputs logits and
`cross_entropy` applies log-softmax itself (feeding it softmax outputs squashes the gradients);
`model.train()` for training and `model.eval()` + `torch.inference_mode()` for evaluation (dropout
left on at evaluation costs accuracy); evaluation runs in batches.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from clsf.config import Config
from clsf.data.stream import Files, worker_count
from clsf.data.torch_pipeline import Batches
from clsf.distributed import World, part, torch_ddp, torch_world
from clsf.engines.base import Engine, Meter, frozen_layers
from clsf.engines.checkpoint import damaged_state, missing_state
from clsf.engines.precision import resolve_precision
from clsf.engines.checkpoint import Checkpoint
from clsf.engines.schedule import lr_at
from clsf.engines.torch_optim import KerasRule
from clsf.errors import UserError
from clsf.models.spec import ModelSpec, narrow_convolutions


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`local_rank`: under torchrun, each process of a machine takes its own GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank or torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device '{name}' is not a torch device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for CUDA but none is available; use device=auto or cpu.")
    return device


def save_torch(obj, path: Path) -> None:
    """torch.save, serialised in memory and written by Python: a full disk is then an OSError (ENOSPC)
    that the run directory turns into its one line, not a RuntimeError from torch's C++ writer."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    Path(path).write_bytes(buf.getbuffer())


class TorchEngine(Engine):
    name = "torch"

    @classmethod
    def detect_world(cls) -> World:
        return torch_world()  # torchrun's RANK / WORLD_SIZE; one process otherwise

    def __init__(self, cfg: Config, spec: ModelSpec, steps_per_epoch: int):
        from clsf.models.torch import build_torch

        super().__init__(cfg, spec, steps_per_epoch)

        torch.manual_seed(cfg.seed)  # initial weights
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs on CUDA
            torch.backends.cudnn.benchmark = False
        # deterministic kernels (an error where none exists) or not, as this run says: the switch is the
        # process's, so an earlier run's setting is undone
        torch.use_deterministic_algorithms(cfg.deterministic)
        self.steps_per_epoch = steps_per_epoch
        self.world = self.detect_world()
        self.torch_device = resolve_device(cfg.device, self.world.local_rank)
        if self.torch_device.type == "cuda":
            torch.cuda.set_device(self.torch_device)
        if self.world.size > 1:
            torch_ddp.join(self.world, self.torch_device, cfg.dist_timeout_s)
        self.precision = resolve_precision(cfg, self.torch_device.type == "cuda", str(self.torch_device), self.cpu_kernels_bf16)
        # mixed precision: the forward pass in bf16/fp16 under autocast, weights and optimizer in float32;
        # fp16 needs its loss scaled so small gradients survive (a disabled scaler passes through)
        self.amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.scaler = torch.amp.GradScaler(self.torch_device.type, enabled=self.precision == "fp16")
        # channels_last: weights and batches in NHWC order; otherwise batches are made plain NCHW
        model = build_torch(spec)
        # ... except for a network with convolutions under 8 channels wide, which oneDNN runs many times
        # slower in NHWC (bench/results/observations.md, O2)
        narrow = narrow_convolutions(spec)
        self.memory_format = torch.channels_last if cfg.torch.channels_last and not narrow else torch.contiguous_format
        self.model = model.to(self.torch_device, memory_format=self.memory_format)
        self.optimizer = KerasRule(self.model.parameters(), cfg.optim)  # Keras' update rules, see torch_optim
        self.step = 0  # global step: the schedule's only state
        self.freeze_trunk(True)
        self._resident = (None,)  # a GPU run: (key of the numpy split, x on the device, y on the device)

    @property
    def device(self) -> str:  # the contract's name for where the model runs, e.g. "cpu", "cuda:0"
        return str(self.torch_device)

    def freeze_trunk(self, frozen: bool) -> None:
        """freeze=trunk: no gradients (so no update and no weight decay) for every layer but the head,
        and its batch norms stay in eval mode while training (running statistics used, not updated)."""
        self.frozen_bn = []
        for name in frozen_layers(self.cfg, self.spec):
            m = self.model.leaf(name)
            m.requires_grad_(not frozen)
            if frozen and isinstance(getattr(m, "op", m), torch.nn.modules.batchnorm._BatchNorm):
                self.frozen_bn.append(getattr(m, "op", m))
        self.model.freeze_kernels()  # a kernel the spec freezes stays frozen when the trunk thaws
        # what the training step calls: DDP (it averages the gradients of the parameters that train,
        # as found when it is built: so built again when that set changes), torch.compile'd or not
        module = self.model
        if self.world.size > 1:
            module = torch_ddp.wrap(self.model, self.torch_device)
        self.forward = torch.compile(module) if self.cfg.torch.compile else module

    def unfreeze(self) -> None:
        self.freeze_trunk(False)

    def global_step(self) -> int:
        return self.step

    def set_global_step(self, step: int) -> None:
        """The schedule's position, for a run resumed with another number of processes (the steps per
        epoch changed); Adam's bias correction keeps counting the updates actually made."""
        self.step = step

    def environment(self) -> dict:
        return {"threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}}

    def close(self) -> None:
        if self.world.size > 1:  # every process leaves the group together, once the lead has written
            torch_ddp.leave(together=True)

    def train_epoch(self, x, y, epoch, meter: Meter, first_step: int = 0) -> None:
        w = self.world
        if first_step == 0:  # resumed inside an epoch, the generator state comes from the checkpoint
            torch.manual_seed(self.cfg.seed * 1_000_003 + epoch + 7_919 * w.rank)  # dropout: (seed, epoch, process)
        x, y = self.resident(x, y)
        batches = Batches(x, y, self.cfg.batch_size, self.pre, training=True, seed=self.cfg.seed,
                          epoch=epoch, device=self.torch_device, first_step=first_step, shard=(w.rank, w.size),
                          workers=worker_count(self.cfg.data.workers), classes=self.classes)
        self.model.train()
        for m in self.frozen_bn:
            m.eval()
        if w.size == 1:
            self._steps(batches, first_step, meter)
        else:
            with torch_ddp.collective(f"training epoch {epoch + 1}"):  # DDP's all-reduce runs inside backward
                self._steps(batches, first_step, meter)

    def _steps(self, batches: Batches, first_step: int, meter: Meter) -> None:
        w = self.world
        for step, (xb, yb) in enumerate(batches, start=first_step):  # xb (B, C, H, W) float32, yb (B,) int64 or (B, K) soft
            # one process: the batch's mean; several: this process's share of the global batch's (DDP averages)
            scale = None if w.size == 1 else batches.loss_scale(step)  # step counts from the epoch's start
            loss, logits = self.train_step(xb, yb, scale)
            target = yb.argmax(1) if yb.ndim == 2 else yb  # mixed (B, K) soft labels: their largest weight
            correct = int((logits.argmax(1) == target).sum())
            if w.size == 1:
                meter.add(step, loss.item(), correct)
            else:  # the global batch's mean loss and correct count, the same on every process
                mean_loss, correct = torch_ddp.sum_across([loss.item() / w.size, correct if scale else 0], self.torch_device)
                meter.add(step, mean_loss, int(correct))
            if meter.stop_requested:  # at a step boundary: Ctrl-C, or a pause the loop asked for
                break

    def train_step(self, xb, yb, scale: float | None = None):
        """One optimizer step on a batch: this global step's rate, forward, loss, backward, clipping,
        update. xb (B, C, H, W) float32, yb (B,) int64 or (B, K) soft labels; `scale`: the loss is
        the sum of the per-image losses times it (a process's share of a global batch), else their
        mean. Returns the loss (a 0-d tensor) and the logits (B, K) float32."""
        o = self.cfg.optim
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.steps_per_epoch, self.cfg.epochs, o, self.cfg.unfreeze_after)
        xb = xb.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.torch_device.type, dtype=self.amp, enabled=self.amp is not None):
            logits = self.forward(xb).float()  # (B, K) logits, no softmax; float32 for the loss
        per = self.loss.torch(logits, yb)  # (B,) w_i * loss_i: smoothing, class weights (clsf.techniques.loss)
        loss = per.mean() if scale is None else per.sum() * scale
        if (penalties := self.model.penalties()) is not None:  # regularisers, activity penalties
            loss = loss + penalties
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # true gradients before clipping
        if o.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_norm)
        self.scaler.step(self.optimizer)  # decoupled weight decay, then the update (fp16: skipped on inf)
        self.scaler.update()
        self.step += 1
        return loss, logits

    def resident(self, x: np.ndarray, y: np.ndarray):
        """On a GPU, the uint8 training split copied to the device once (kept while the same arrays
        come back each epoch); elsewhere the numpy arrays themselves."""
        if self.torch_device.type != "cuda" or isinstance(x, Files):  # streamed images stay files
            return x, y
        key = (x.__array_interface__["data"][0], x.shape)
        if self._resident[0] != key:
            self._resident = (key, torch.from_numpy(x).to(self.torch_device), torch.from_numpy(y).to(self.torch_device))
        return self._resident[1:]

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """(N, K) logits; several processes each compute their share and gather the rest."""
        if self.world.size == 1:
            return self._logits(x)
        torch_ddp.broadcast_buffers(self.model)  # rank 0's batch-norm statistics everywhere
        a, b = part(0, len(x), self.world.rank, self.world.size)
        local = self._logits(x[a:b]) if b > a else np.zeros((0, self.classes), np.float32)
        return torch_ddp.gather_rows(local, len(x), self.world, self.torch_device)

    @torch.inference_mode()
    def _logits(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()  # dropout off, batch norm uses running statistics
        batches = Batches(x, np.zeros(len(x), np.int64), self.cfg.eval_batch_size, self.pre, training=False,
                          workers=worker_count(self.cfg.data.workers),
                          device=self.torch_device)
        with torch.autocast(self.torch_device.type, dtype=self.amp, enabled=self.amp is not None):
            return torch.cat([self.model(xb.contiguous(memory_format=self.memory_format)).float().cpu()
                              for xb, _ in batches]).numpy()

    @torch.inference_mode()
    def features(self, x: np.ndarray) -> np.ndarray:
        """(N, D): the input of the last layer (every child module but the last), flattened."""
        self.model.eval()
        body = torch.nn.Sequential(*list(self.model.children())[:-1])
        batches = Batches(x, np.zeros(len(x), np.int64), self.cfg.eval_batch_size, self.pre, training=False,
                          device=self.torch_device)
        return torch.cat([body(xb).flatten(1).float().cpu() for xb, _ in batches]).numpy()

    def export(self, fmt, path, a, b, probabilities, example) -> None:
        """The model behind a normalising input step (NHWC raw pixels in), traced to TorchScript or
        exported to ONNX by torch's dynamo exporter."""
        import contextlib
        import importlib.util
        import io
        import logging
        import warnings

        module = _Exported(self.model, a, b, probabilities).cpu().eval()
        x = torch.from_numpy(example[:2])
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # notes about optional torchvision ops
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # exporter progress
            warnings.simplefilter("ignore")  # tracer notes about Python-side shape arithmetic: shapes are fixed here
            if fmt == "torchscript":  # serialised in memory, written by Python: a full disk is an OSError,
                buf = io.BytesIO()   # not an abort inside torch's C++ writer
                torch.jit.save(torch.jit.trace(module, x), buf)
                Path(path).write_bytes(buf.getvalue())
                return
            for pkg in ("onnx", "onnxscript"):
                if importlib.util.find_spec(pkg) is None:
                    raise UserError(f"ONNX export needs {pkg}; install it with pip install 'clsf[export]'.")
            torch.onnx.export(module, (x,), str(path), input_names=["images"], output_names=["output"],
                              dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False,
                              external_data=False)  # one self-contained file

    def weights(self) -> dict:
        from clsf.models.transfer import torch_weights

        return torch_weights(self.model, self.spec)

    def set_weights(self, weights: dict) -> None:
        from clsf.models.transfer import set_torch_weights

        set_torch_weights(self.model, self.spec, weights)

    def save(self, ckpt: Checkpoint) -> None:
        from clsf.models.transfer import save_npz, torch_weights

        save_npz(ckpt.weights, torch_weights(self.model, self.spec))
        rng = {"cpu": torch.get_rng_state()}  # dropout's generator, for a resume inside an epoch
        if self.torch_device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.torch_device)
        save_torch({"model": self.model.state_dict(), "optim": self.optimizer.state_dict(), "step": self.step, "rng": rng,
                    "scaler": self.scaler.state_dict()}, ckpt.state("pt"))

    def load(self, ckpt: Checkpoint, training_state: bool = True, only: set[str] | None = None) -> None:
        from clsf.models.transfer import load_npz, set_torch_weights

        if not training_state:
            set_torch_weights(self.model, self.spec, load_npz(ckpt.weights), only)
            return
        path = ckpt.state("pt")
        if not path.exists():
            raise missing_state(path)
        try:  # weights_only: tensors and plain containers only, never code
            state = torch.load(path, map_location=self.torch_device, weights_only=True)
        except pickle.UnpicklingError as e:
            raise UserError(f"{path} holds more than tensors and was not loaded (torch's safe loader: "
                            f"{str(e).splitlines()[0][:120]}); use a checkpoint clsf wrote.") from None
        except (RuntimeError, EOFError, OSError, ValueError) as e:  # truncated, empty, not a torch file
            raise damaged_state(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optim"])
            self.step = int(state["step"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise damaged_state(path, f"{type(e).__name__}: {e}") from None
        if state.get("scaler"):  # fp16's current loss scale
            self.scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            torch.set_rng_state(state["rng"]["cpu"].cpu())
            if "cuda" in state["rng"] and self.torch_device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.torch_device)


class _Exported(torch.nn.Module):
    """What an export runs: (N, H, W, C) float32 raw pixels -> logits (or probabilities)."""

    def __init__(self, net: torch.nn.Module, a: np.ndarray, b: np.ndarray, probabilities: bool):
        super().__init__()
        self.net, self.probabilities = net, probabilities
        self.register_buffer("a", torch.from_numpy(a).view(1, -1, 1, 1))  # normalised = raw * a + b
        self.register_buffer("b", torch.from_numpy(b).view(1, -1, 1, 1))

    def forward(self, images):  # (N, H, W, C) float32 0-255
        logits = self.net(images.permute(0, 3, 1, 2) * self.a + self.b)  # (N, K)
        return torch.softmax(logits, dim=1) if self.probabilities else logits
