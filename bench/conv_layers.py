"""Benchmark: a model's 3x3 convolutions, layer by layer, as keras-jax's XLA computes them against
torch's oneDNN: the forward pass, the input's gradient and the kernel's gradient.

    python bench/conv_layers.py [--batch 2000] [--model airbench] [--repeats 3] [--rounds 2]

For every 3x3 stride-1 'same' convolution of the zoo model (bench/jax_kernel_grad.py's `layers`, the
shapes --recipe speedrun-muon trains), milliseconds per call on random fp32 data: XLA's jitted
convolution and its two gradients with the XLA_FLAGS the keras-jax engine sets (its Eigen
convolutions, clsf.engines.jax_kernels.xla_flags), and torch's `conv2d` and
`aten.convolution_backward` on channels-last tensors, as the torch engine lays them out. Each
framework runs in a process of its own, `--rounds` times alternated (torch, XLA, torch, XLA, ...),
each call the median of `--repeats` after a warm-up; the table gives the median over rounds.
It answers whether keras-jax's step is slower than torch's in its convolutions or around them
(bench/step_profile.py --recipe speedrun-muon splits the whole step). Writes
bench/results/conv-layers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import HERE, cpu_model
from jax_kernel_grad import layers

OPS = ("forward", "input gradient", "kernel gradient")


def median_ms(fn, repeats: int) -> float:
    fn()  # compile / warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def worker_xla(batch: int, repeats: int, shapes) -> list[dict]:
    import jax
    import numpy as np
    from jax import lax

    def conv(x, w):  # (N, H, W, C_in) x (3, 3, C_in, C_out) -> (N, H, W, C_out), 'same'
        return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))

    fns = {"forward": jax.jit(lambda x, w, dy: conv(x, w)),
           "input gradient": jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0]),
           "kernel gradient": jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])}
    rng = np.random.default_rng(0)
    rows = []
    for name, c_in, c_out, size in shapes:
        x = jax.numpy.asarray(rng.standard_normal((batch, size, size, c_in), np.float32))
        w = jax.numpy.asarray(rng.standard_normal((3, 3, c_in, c_out), np.float32))
        dy = jax.numpy.asarray(rng.standard_normal((batch, size, size, c_out), np.float32))
        rows.append({op: median_ms(lambda f=f: f(x, w, dy).block_until_ready(), repeats) for op, f in fns.items()})
    return rows


def worker_torch(batch: int, repeats: int, shapes) -> list[dict]:
    import torch

    cl = torch.channels_last
    rows = []
    for name, c_in, c_out, size in shapes:
        x = torch.randn(batch, c_in, size, size).contiguous(memory_format=cl)
        w = torch.randn(c_out, c_in, 3, 3).contiguous(memory_format=cl)
        dy = torch.randn(batch, c_out, size, size).contiguous(memory_format=cl)

        def grad(mask):  # aten's own backward, as autograd calls it for conv2d: (d input, d weight, d bias)
            return lambda: torch.ops.aten.convolution_backward(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

        with torch.no_grad():
            rows.append({"forward": median_ms(lambda: torch.nn.functional.conv2d(x, w, padding=1), repeats),
                         "input gradient": median_ms(grad([True, False, False]), repeats),
                         "kernel gradient": median_ms(grad([False, True, False]), repeats)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--model", default="airbench")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "conv-layers.md"))
    ap.add_argument("--worker", choices=["xla", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--shapes", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        work = worker_xla if a.worker == "xla" else worker_torch
        print(json.dumps(work(a.batch, a.repeats, json.loads(a.shapes))))
        return
    from clsf.engines import jax_kernels

    shapes = layers(a.model)
    runs = {"torch": [], "xla": []}
    for r in range(a.rounds):
        for kind in ("torch", "xla"):
            env = dict(os.environ)
            if kind == "xla":  # as the keras-jax engine starts JAX
                env.update(XLA_FLAGS=jax_kernels.xla_flags(env.get("XLA_FLAGS", "")), JAX_PLATFORMS="cpu")
            out = subprocess.run([sys.executable, __file__, "--worker", kind, "--batch", str(a.batch), "--repeats",
                                  str(a.repeats), "--shapes", json.dumps(shapes)], env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
            runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}: {kind} done", flush=True)

    def ms(kind, i, op):  # median over rounds
        return statistics.median(run[i][op] for run in runs[kind])

    lines = [f"# {a.model}'s 3x3 convolutions: XLA (keras-jax) against torch's oneDNN ({time.strftime('%Y-%m-%d')})", "",
             f"Milliseconds per call at batch {a.batch}, fp32, each the median of {a.repeats} calls after a warm-up, "
             f"then the median over {a.rounds} rounds of alternated processes. XLA with the flags the keras-jax engine "
             "sets (its Eigen convolutions); torch on channels-last tensors. "
             f"CPU: {cpu_model()} ({os.cpu_count()} cores). Command: `python bench/conv_layers.py --batch {a.batch} "
             f"--model {a.model} --repeats {a.repeats} --rounds {a.rounds}`.", "",
             "| layer | shape | " + " | ".join(f"{op}: torch / XLA (XLA/torch)" for op in OPS) + " |",
             "| --- | --- | " + " | ".join("---" for _ in OPS) + " |"]
    totals = {op: [0.0, 0.0] for op in OPS}
    for i, (name, c_in, c_out, size) in enumerate(shapes):
        cells = []
        for op in OPS:
            t, x = ms("torch", i, op), ms("xla", i, op)
            totals[op][0] += t
            totals[op][1] += x
            cells.append(f"{t:.0f} / {x:.0f} ({x / t:.2f}x)")
        lines.append(f"| {name} | {c_in}->{c_out} at {size}x{size} | " + " | ".join(cells) + " |")
    lines.append("| all | | " + " | ".join(f"{t:.0f} / {x:.0f} ({x / t:.2f}x)" for t, x in totals.values()) + " |")
    t_all, x_all = (sum(v[k] for v in totals.values()) for k in (0, 1))
    lines += ["", f"All three together: torch {t_all:,.0f} ms, XLA {x_all:,.0f} ms ({x_all / t_all:.2f}x)."]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
