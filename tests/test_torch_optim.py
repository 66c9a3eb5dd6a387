"""The torch engine's Keras rules: the foreach form (one torch._foreach_* call per line of the
rule) gives the per-tensor loop's bits exactly, for every optimizer, with weight decay, a
changing learning rate and frozen tensors. Both are held to Keras itself by test_parity.py."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from clsf.config import OptimConfig  # noqa: E402
from clsf.engines.torch_optim import KerasRule  # noqa: E402

RULES = {"sgd": dict(name="sgd", momentum=0.0), "sgd-momentum": dict(name="sgd"), "sgd-nesterov": dict(name="sgd", nesterov=True),
         "rmsprop": dict(name="rmsprop"), "adam": dict(name="adam"), "adamw": dict(name="adamw", weight_decay=0.05)}
SHAPES = [(3, 3, 3, 8), (8,), (16, 8, 3, 3), (16,), (64, 10), (10,)]


def _steps(o: OptimConfig, foreach: bool, cls=KerasRule, steps: int = 6) -> list:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    opt = cls(params, o, foreach=foreach)
    for i in range(steps):
        opt.param_groups[0]["lr"] = o.lr * (1 + 0.3 * i)  # a schedule: the rate moves every step
        for j, p in enumerate(params):
            # tensor 2 is frozen for the first half (no gradient), as freeze=trunk leaves it
            p.grad = None if (j == 2 and i < steps // 2) else torch.randn(p.shape, generator=gen) * 10.0 ** (j % 3 - 1)
        opt.step()
    return [p.detach().clone() for p in params] + [v.clone() for st in opt.state.values() for v in st.values()]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_foreach_gives_the_loops_bits(rule, decay):
    o = OptimConfig(**{"lr": 0.01, **RULES[rule]})
    o = dataclasses.replace(o, weight_decay=o.weight_decay or decay)
    a, b = _steps(o, foreach=False), _steps(o, foreach=True)
    assert len(a) == len(b)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


class _Regrouped(KerasRule):
    """Nesterov's update as one add of (m*v - lr*g): the same rule, other roundings."""

    def _foreach(self, params, lr, t):
        grads = [p.grad for p in params]
        v = self._slots(params, "velocity")
        torch._foreach_mul_(v, self.o.momentum)
        torch._foreach_add_(v, grads, alpha=-lr)
        step = torch._foreach_mul(v, self.o.momentum)
        torch._foreach_add_(step, grads, alpha=-lr)
        torch._foreach_add_(params, step)


def test_the_comparison_sees_a_regrouping():
    """The teeth: exact equality is what makes the test mean something — the same rule with its
    additions grouped otherwise already differs in the last bits."""
    o = OptimConfig(name="sgd", nesterov=True, lr=0.01)
    a, b = _steps(o, foreach=False), _steps(o, foreach=True, cls=_Regrouped)
    assert not all(torch.equal(u, v) for u, v in zip(a, b))
    assert all(torch.allclose(u, v, rtol=1e-5, atol=1e-6) for u, v in zip(a, b))
