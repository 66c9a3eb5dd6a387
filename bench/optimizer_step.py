"""Benchmark: the torch engine's optimizer step on the CPU, Keras' rules written as a per-tensor Python loop
against the same rules as torch._foreach_* calls (clsf.engines.torch_optim.KerasRule), and torch's
own fused/foreach optimizers for scale (they are not Keras' rules: the parity test refuses them).

    python bench/optimizer_step.py [--models seed-cnn,airbench] [--steps 50] [--threads 2]

For each zoo model's parameters (torch layout, random gradients), milliseconds per `step()`:
median, min and max of 7 passes over --steps steps, all in one process, the forms' passes
interleaved, so the ratios compare like with like. Writes bench/results/optimizer-step.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from common import HERE, cpu_model
RULES = {"sgd-nesterov": dict(name="sgd", nesterov=True, weight_decay=5e-4), "rmsprop": dict(name="rmsprop"),
         "adam": dict(name="adam"),
         # --recipe speedrun-muon's rule: Muon (three Newton-Schulz iterations per kernel) on the 4-d
         # kernels, Nesterov SGD on the rest; torch.optim.Muon takes 2-d tensors only, so no "own" column
         "sgd-nesterov+muon": dict(name="sgd", nesterov=True, momentum=0.85, weight_decay=0.016, muon_lr=0.24,
                                   muon_momentum=0.6)}


def passes(steps: dict, n: int, repeats: int = 7) -> dict[str, list[float]]:
    """ms per call of each of `steps` ({name: fn}), their passes interleaved (a, b, c, a, b, c, ...)
    so that a machine slowing down or speeding up mid-run touches every form alike."""
    for step in steps.values():
        step()
    out = {k: [] for k in steps}
    for _ in range(repeats):
        for k, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            out[k].append((time.perf_counter() - t0) / n * 1e3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="seed-cnn,airbench")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "optimizer-step.md"))
    args = ap.parse_args()
    import torch

    from clsf.config import OptimConfig
    from clsf.engines.torch_optim import KerasRule
    from clsf.models.torch import build_torch
    from clsf.models.zoo import get_spec

    torch.set_num_threads(args.threads)
    lines = [f"# The torch engine's optimizer step ({time.strftime('%Y-%m-%d')}, {args.threads} threads)", "",
             f"CPU: {cpu_model()} ({os.cpu_count()} cores). Command: `{' '.join(['python bench/optimizer_step.py', *sys.argv[1:]])}`.", "",
             "Milliseconds per `step()`: median (min-max) of 7 passes over "
             f"{args.steps} steps, in one process, the three forms' passes interleaved. `loop` is Keras' rule per tensor in Python, `foreach` the same "
             "rule as torch._foreach_* calls (the same bits, tests/test_torch_optim.py; the engine's choice on a GPU, the "
             "loop on a CPU); "
             "torch's own optimizer (foreach) is shown for scale only — its rules differ from Keras'. `sgd-nesterov+muon` is "
             "--recipe speedrun-muon's rule: Muon on the convolution kernels (the same code in both forms), SGD on the rest "
             "(torch.optim.Muon takes 2-d tensors only: no own column).", "",
             "| model | tensors | parameters | rule | loop | foreach | loop / foreach | torch's own (foreach) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model in args.models.split(","):
        net = build_torch(get_spec(model))
        params = [p for p in net.parameters() if p.requires_grad]
        gen = torch.Generator().manual_seed(0)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-3
        n = sum(p.numel() for p in params)
        for rule, kw in RULES.items():
            o = OptimConfig(**{"lr": 1e-3, **kw})
            forms = {"loop": KerasRule(params, o, foreach=False).step, "foreach": KerasRule(params, o, foreach=True).step}
            if not o.muon_lr:
                forms["own"] = {"sgd": lambda: torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=True),
                                "rmsprop": lambda: torch.optim.RMSprop(params, lr=1e-3, foreach=True),
                                "adam": lambda: torch.optim.Adam(params, lr=1e-3, foreach=True)}[o.name]().step
            timing = passes(forms, args.steps)
            med = {k: statistics.median(v) for k, v in timing.items()}
            cell = {k: f"{med[k]:.3f} ({min(v):.3f}-{max(v):.3f})" for k, v in timing.items()}
            cell.setdefault("own", "—")
            lines.append(f"| {model} | {len(params)} | {n:,} | {rule} | {cell['loop']} | {cell['foreach']} | "
                         f"{med['loop'] / med['foreach']:.2f} | {cell['own']} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
