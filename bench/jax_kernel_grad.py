"""Benchmark: keras-jax's convolution kernel gradient on the CPU, XLA's own against clsf's one matmul
per kernel tap (clsf.engines.jax_kernels), under each of XLA's two convolution kernels.

    python bench/jax_kernel_grad.py [--batch 500] [--model airbench] [--repeats 5]

For every 3x3 stride-1 'same' convolution of the zoo model (the shapes --recipe speedrun-muon trains),
milliseconds per jitted dL/dW on random data: the median of --repeats calls after a warm-up, the two
forms interleaved layer by layer. XLA reads its flags once per process, so each convolution kernel
runs in a process of its own: `eigen` with the flag the keras-jax engine sets (XLA's own
convolutions), `ynnpack` without it (jaxlib 0.10's default). jax_kernels.replaced() keeps the taps
only where XLA's convolutions are YNNPACK's. Writes bench/results/jax-kernel-grad.md.
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


def layers(model: str) -> list[tuple[str, int, int, int]]:
    """(name, C_in, C_out, size) of the model's 3x3 stride-1 'same' convolutions at 32x32x3 input."""
    from clsf.config import build_config
    from clsf.models.spec import Conv, MaxPool, walk
    from clsf.run.setup import build_spec

    cfg = build_config(flags={"engine": "torch"}, overrides=[f"model.name={model}", "data.scale=0-1"])
    spec = build_spec(cfg, (32, 32, 3), 10)
    out, c, size = [], 3, 32
    for name, layer in walk(spec.layers):  # follow channels and size through the spec's own layers
        if isinstance(layer, Conv):
            if layer.kernel == 3 and layer.stride == 1 and layer.padding == "same" and not layer.frozen:
                out.append((name, c, layer.filters, size))
            elif layer.padding == "valid":
                size = (size - layer.kernel) // layer.stride + 1
            c = layer.filters
        elif isinstance(layer, MaxPool):
            size //= layer.pool
    return out


def worker(batch: int, repeats: int, shapes) -> list[dict]:
    import jax
    import numpy as np
    from jax import lax

    from clsf.engines import jax_kernels

    taps = jax_kernels._make_conv2d()  # clsf's custom gradient: the taps' matmuls
    dims, pads = ("NHWC", "HWIO", "NHWC"), ((1, 1), (1, 1))
    forms = {"xla": jax.jit(lambda x, w, dy: jax.vjp(lambda w: lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=dims), w)[1](dy)[0]),
             "taps": jax.jit(lambda x, w, dy: jax.vjp(lambda w: taps(x, w, (1, 1), pads), w)[1](dy)[0])}
    rng = np.random.default_rng(0)
    rows = []
    for name, c_in, c_out, size in shapes:
        x = jax.numpy.asarray(rng.standard_normal((batch, size, size, c_in), np.float32))
        w = jax.numpy.asarray(rng.standard_normal((3, 3, c_in, c_out), np.float32))
        dy = jax.numpy.asarray(rng.standard_normal((batch, size, size, c_out), np.float32))
        times = {k: [] for k in forms}
        for f in forms.values():
            f(x, w, dy).block_until_ready()  # compile
        for _ in range(repeats):
            for k, f in forms.items():  # interleaved: a slow moment of the machine hits both
                t0 = time.perf_counter()
                f(x, w, dy).block_until_ready()
                times[k].append(time.perf_counter() - t0)
        rows.append({"layer": name, "shape": f"{c_in}->{c_out} at {size}x{size}", **{k: sorted(v) for k, v in times.items()}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--model", default="airbench")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "jax-kernel-grad.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.batch, a.repeats, json.loads(a.worker))))
        return
    from clsf.engines import jax_kernels

    shapes = layers(a.model)
    results = {}
    for kind, flags in (("eigen", jax_kernels.NO_YNN_CONVS), ("ynnpack", "")):
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        r = subprocess.run([sys.executable, __file__, "--batch", str(a.batch), "--repeats", str(a.repeats),
                            "--worker", json.dumps(shapes)], env=env, capture_output=True, text=True, check=True)
        results[kind] = json.loads(r.stdout.strip().splitlines()[-1])
        print(kind, "done", flush=True)

    def ms(v):
        return f"{statistics.median(v) * 1e3:.0f} ({v[0] * 1e3:.0f}-{v[-1] * 1e3:.0f})"

    lines = [f"# keras-jax's kernel gradient: XLA's own against the taps' matmuls ({time.strftime('%Y-%m-%d')})", "",
             f"Milliseconds per jitted dL/dW of {a.model}'s 3x3 convolutions at batch {a.batch}, fp32, median "
             f"(min-max) of {a.repeats} calls, the two forms interleaved; each convolution kernel in a process of "
             f"its own. CPU: {cpu_model()} ({os.cpu_count()} cores). Command: `python bench/jax_kernel_grad.py "
             f"--batch {a.batch} --model {a.model} --repeats {a.repeats}`.", ""]
    for kind, rows in results.items():
        lines += [f"## XLA's convolutions: {kind}" + (" (the keras-jax engine's setting)" if kind == "eigen" else " (jaxlib 0.10's default)"),
                  "", "| layer | shape | XLA's ms | taps' ms | taps / XLA |", "| --- | --- | --- | --- | --- |"]
        for r in rows:
            ratio = statistics.median(r["taps"]) / statistics.median(r["xla"])
            lines.append(f"| {r['layer']} | {r['shape']} | {ms(r['xla'])} | {ms(r['taps'])} | {ratio:.2f} |")
        tx = sum(statistics.median(r["xla"]) for r in rows) * 1e3
        tt = sum(statistics.median(r["taps"]) for r in rows) * 1e3
        lines += [f"| all | | {tx:.0f} | {tt:.0f} | {tt / tx:.2f} |", ""]
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
