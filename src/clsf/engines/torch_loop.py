"""Engine `torch`: the PyTorch loop, read top to bottom.

What the seed script got wrong and this loop gets right: the model outputs logits and
`cross_entropy` applies log-softmax itself (feeding it softmax outputs squashes the gradients);
`model.train()` for training and `model.eval()` + `torch.inference_mode()` for evaluation (dropout
left on at evaluation costs accuracy); evaluation runs in batches.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clsf.config import Config, OptimConfig
from clsf.data.torch_pipeline import Batches
from clsf.data.transforms import Preprocess
from clsf.engines.base import EpochStats, check_finite
from clsf.engines.schedule import lr_at
from clsf.errors import UserError
from clsf.models.spec import ModelSpec


class RMSpropKeras(torch.optim.Optimizer):
    """RMSprop with Keras' update rule: v = rho*v + (1-rho)*g^2; w -= lr * g / sqrt(v + eps).
    torch.optim.RMSprop puts eps outside the root (sqrt(v) + eps), which is a different optimizer
    whenever v is small; this keeps 'rmsprop' meaning one thing in every engine."""

    def __init__(self, params, lr: float, rho: float, eps: float):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["v"] = torch.zeros_like(p)
                v = state["v"]
                v.mul_(group["rho"]).addcmul_(p.grad, p.grad, value=1 - group["rho"])
                p.addcdiv_(p.grad, (v + group["eps"]).sqrt_(), value=-group["lr"])


def make_optimizer(params, o: OptimConfig) -> torch.optim.Optimizer:
    params = list(params)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    return RMSpropKeras(params, lr=o.lr, rho=o.rho, eps=o.eps)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
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


class TorchEngine:
    name = "torch"

    def __init__(self, cfg: Config, spec: ModelSpec, pre: Preprocess, steps_per_epoch: int):
        from clsf.models.torch import build_torch

        torch.manual_seed(cfg.seed)  # initial weights
        self.cfg, self.spec, self.pre, self.steps_per_epoch = cfg, spec, pre, steps_per_epoch
        self.device = resolve_device(cfg.device)
        self.model = build_torch(spec).to(self.device)
        self.optimizer = make_optimizer(self.model.parameters(), cfg.optim)
        self.step = 0  # global step: the schedule's only state

    def global_step(self) -> int:
        return self.step

    def train_epoch(self, x, y, epoch, on_batch) -> EpochStats:
        o = self.cfg.optim
        torch.manual_seed(self.cfg.seed * 1_000_003 + epoch)  # dropout masks: a function of (seed, epoch)
        batches = Batches(x, y, self.cfg.batch_size, self.pre, training=True, seed=self.cfg.seed,
                          epoch=epoch, device=self.device)
        n_steps = len(batches)
        decoupled_wd = o.weight_decay if o.name != "adamw" else 0.0  # AdamW decays inside step()
        self.model.train()
        total_loss, total_correct, seen, lr = 0.0, 0, 0, None
        for step, (xb, yb) in enumerate(batches):  # xb (B, C, H, W) float32, yb (B,) int64
            lr = lr_at(self.step, self.steps_per_epoch, self.cfg.epochs, o)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            logits = self.model(xb)  # (B, K) logits, no softmax
            loss = F.cross_entropy(logits, yb, label_smoothing=o.label_smoothing)
            loss_value = loss.item()
            check_finite(loss_value, epoch, step, self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o.clip_norm:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_norm)
            if decoupled_wd:
                with torch.no_grad():
                    for p in self.model.parameters():
                        p.mul_(1 - lr * decoupled_wd)  # w -= lr * wd * w, as Keras does
            self.optimizer.step()
            self.step += 1
            n = len(yb)
            total_loss += loss_value * n
            total_correct += int((logits.argmax(1) == yb).sum())
            seen += n
            on_batch(step, n_steps, total_loss / seen, total_correct / seen)
        return EpochStats(total_loss / seen, total_correct / seen, seen, lr)

    @torch.inference_mode()
    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()  # dropout off, batch norm uses running statistics
        batches = Batches(x, np.zeros(len(x), np.int64), self.cfg.eval_batch_size, self.pre, training=False, device=self.device)
        return torch.cat([self.model(xb).float().cpu() for xb, _ in batches]).numpy()

    def save(self, folder: Path) -> None:
        from clsf.models.transfer import save_npz, torch_weights

        save_npz(folder / "weights.npz", torch_weights(self.model, self.spec))
        torch.save({"model": self.model.state_dict(), "optim": self.optimizer.state_dict(), "step": self.step},
                   folder / "state.pt")

    def load(self, folder: Path, training_state: bool = True) -> None:
        from clsf.models.transfer import load_npz, set_torch_weights

        if not training_state or not (folder / "state.pt").exists():
            set_torch_weights(self.model, self.spec, load_npz(folder / "weights.npz"))
            return
        state = torch.load(folder / "state.pt", map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        self.step = int(state["step"])
