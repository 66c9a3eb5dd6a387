"""Keras' optimizer rules for torch, so `optim.name` means one update in every engine.

torch's own optimizers differ from Keras' once the learning rate moves or the second moment is
small: SGD applies the rate after the momentum buffer (b = m*b + g; w -= lr*b) where Keras folds it
in (v = m*v - lr*g; w += v), so the two differ under any schedule; RMSprop puts eps outside the
root with alpha 0.99; Adam puts eps on the bias-corrected root. These follow Keras 3 line by line
(keras/src/optimizers/{sgd,adam,rmsprop}.py), and the engine parity test holds them to it.

Weight decay is decoupled and happens first, as in Keras: w -= lr * weight_decay * w, on every
parameter, every optimizer ('adamw' is 'adam' with it; the name is kept for people who expect it).
Gradient clipping (global L2 norm) is the loop's job, before step(), as in Keras. With optim.muon_lr
the convolution kernels step by Muon after the decay (clsf.techniques.muon, the same in every engine).
"""

from __future__ import annotations

import math

import torch

from clsf.config import OptimConfig
from clsf.techniques import muon


class KerasRule(torch.optim.Optimizer):
    """Two forms of the same rule, giving the same bits (tests/test_torch_optim.py): a per-tensor
    loop, and `foreach`, each line of the rule applied to every tensor at once with torch._foreach_*
    (one call per line: on a GPU, multi-tensor kernels instead of a launch per tensor and line).
    `foreach=None` picks foreach on a GPU and the loop elsewhere: on a CPU the foreach calls loop
    over the tensors themselves, a pass over all ~8 MB of airbench's weights per line instead of
    each tensor's lines while it is in cache (bench/results/optimizer-step.md; observations.md, O7)."""

    def __init__(self, params, o: OptimConfig, foreach: bool | None = None):
        super().__init__(params, dict(lr=o.lr))
        self.o, self.foreach = o, foreach

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            # Keras counts steps once per optimizer, not per variable: Adam's bias correction uses
            # that count, so a layer unfrozen at step 1000 starts at t = 1001. The group holds it,
            # so state_dict saves it (older checkpoints counted per parameter, as "t").
            if "iterations" not in group:
                group["iterations"] = max((st.get("t", 0) for st in self.state.values()), default=0)
            group["iterations"] += 1
            params = [p for p in group["params"] if p.grad is not None]  # frozen layers have none
            if self.o.muon_lr:
                kernels = [p for p in params if muon.applies(p.shape)]
                params = [p for p in params if not muon.applies(p.shape)]
                self._muon(kernels, group["lr"])
            if params:
                foreach = params[0].is_cuda if self.foreach is None else self.foreach
                (self._foreach if foreach else self._loop)(params, group["lr"], group["iterations"])

    def _muon(self, kernels, lr):
        o = self.o
        for p in kernels:  # Keras' order: the decay first (undone by Muon's renormalisation), then the step
            if o.weight_decay:
                p.mul_(1 - lr * o.weight_decay)
            buf = self.state[p].setdefault("muon", torch.zeros_like(p))
            muon.step_torch(p, p.grad, buf, lr * o.muon_lr / o.lr, o.muon_momentum)

    def _slots(self, params, name):
        return [self.state[p].setdefault(name, torch.zeros_like(p)) for p in params]

    def _foreach(self, params, lr, t):
        o, grads = self.o, [p.grad for p in params]
        if o.weight_decay:
            torch._foreach_mul_(params, 1 - lr * o.weight_decay)
        if o.name == "sgd":
            if not o.momentum:
                torch._foreach_add_(params, grads, alpha=-lr)
                return
            v = self._slots(params, "velocity")
            torch._foreach_mul_(v, o.momentum)
            torch._foreach_add_(v, grads, alpha=-lr)  # v = m*v - lr*g
            if o.nesterov:
                torch._foreach_add_(params, v, alpha=o.momentum)
                torch._foreach_add_(params, grads, alpha=-lr)  # w += m*v - lr*g
            else:
                torch._foreach_add_(params, v)  # w += v
        elif o.name == "rmsprop":
            v = self._slots(params, "velocity")
            torch._foreach_mul_(v, o.rho)
            torch._foreach_addcmul_(v, grads, grads, value=1 - o.rho)  # v = rho*v + (1-rho)*g^2
            root = torch._foreach_add(v, o.eps)
            torch._foreach_sqrt_(root)
            torch._foreach_addcdiv_(params, grads, root, value=-lr)  # w -= lr*g/sqrt(v + eps)
        else:  # adam, adamw
            m, v = self._slots(params, "m"), self._slots(params, "v")
            alpha = lr * math.sqrt(1 - o.beta2**t) / (1 - o.beta1**t)
            torch._foreach_lerp_(m, grads, 1 - o.beta1)  # m += (g - m) * (1 - beta1)
            torch._foreach_mul_(v, o.beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - o.beta2)
            root = torch._foreach_sqrt(v)
            torch._foreach_add_(root, o.eps)
            torch._foreach_addcdiv_(params, m, root, value=-alpha)  # w -= alpha*m/(sqrt(v) + eps)

    def _loop(self, params, lr, t):
        o = self.o
        for p in params:
            g, state = p.grad, self.state[p]
            if o.weight_decay:
                p.mul_(1 - lr * o.weight_decay)
            if o.name == "sgd":
                if not o.momentum:
                    p.add_(g, alpha=-lr)
                    continue
                v = state.setdefault("velocity", torch.zeros_like(p))
                v.mul_(o.momentum).add_(g, alpha=-lr)  # v = m*v - lr*g
                if o.nesterov:
                    p.add_(v, alpha=o.momentum).add_(g, alpha=-lr)  # w += m*v - lr*g
                else:
                    p.add_(v)  # w += v
            elif o.name == "rmsprop":
                v = state.setdefault("velocity", torch.zeros_like(p))
                v.mul_(o.rho).addcmul_(g, g, value=1 - o.rho)  # v = rho*v + (1-rho)*g^2
                p.addcdiv_(g, (v + o.eps).sqrt_(), value=-lr)  # w -= lr*g/sqrt(v + eps)
            else:  # adam, adamw
                m = state.setdefault("m", torch.zeros_like(p))
                v = state.setdefault("v", torch.zeros_like(p))
                alpha = lr * math.sqrt(1 - o.beta2**t) / (1 - o.beta1**t)
                m.lerp_(g, 1 - o.beta1)  # m += (g - m) * (1 - beta1)
                v.mul_(o.beta2).addcmul_(g, g, value=1 - o.beta2)
                p.addcdiv_(m, v.sqrt().add_(o.eps), value=-alpha)  # w -= alpha*m/(sqrt(v) + eps)
