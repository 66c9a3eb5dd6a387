"""Check: does TensorFlow's oneDNN compute a narrow network's gradients the same twice?

    python bench/onednn_narrow.py [--widths 4,8,8 --widths 8,8,8] [--calls 20]

For each width list, in a fresh process each with TF_ENABLE_ONEDNN_OPTS=1 and =0: resnet-s (one
block a stage) on one fixed batch of 32 random 10x10x3 images, the gradient of the loss taken
`--calls` times by one tf.function; the largest change of any variable's gradient between calls,
relative to that gradient's largest entry. Pure arithmetic on the same inputs: anything but 0 is a
kernel that reads what it should not (observations.md, O14). And, from the same initial weights, each
of oneDNN's calls against Eigen's first: the largest difference, relative as above (float sums in
another order: about 1e-5; a wrong kernel: of order 1). Writes bench/results/onednn-narrow.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, cpu_model


def worker(widths: list[int], calls: int, save: str) -> dict:
    import numpy as np

    from clsf.frameworks import import_tf

    tf = import_tf()
    import keras

    from clsf.engines.tf_kernels import onednn_enabled
    from clsf.models.keras import build_keras
    from clsf.models.zoo import get_spec

    keras.utils.set_random_seed(0)  # the same initial weights in both kernels' processes
    model = build_keras(get_spec("resnet-s", 3, (10, 10, 3), widths=widths, blocks=1))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((32, 10, 10, 3)).astype(np.float32))  # (B, H, W, C)
    y = tf.constant(rng.integers(0, 3, 32))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def grads(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        return tape.gradient(value, model.trainable_variables)

    every = [[g.numpy() for g in grads(x, y)] for _ in range(calls)]
    worst, where = 0.0, ""
    for later in every[1:]:
        for v, a, b in zip(model.trainable_variables, every[0], later):
            change = float(np.abs(a - b).max() / (np.abs(a).max() + 1e-30))
            if change > worst:
                worst, where = change, v.path
    np.savez(save, **{f"{i}:{v.path}": g for i, gs in enumerate(every) for v, g in zip(model.trainable_variables, gs)})
    return {"onednn": onednn_enabled(), "change": worst, "where": where}


def against(onednn: str, eigen: str) -> tuple[float, str]:
    """The largest difference of any of oneDNN's calls from Eigen's first, relative to Eigen's largest entry."""
    import numpy as np

    a, b = np.load(onednn), np.load(eigen)
    worst = (0.0, "")
    for key in a.files:  # "call:variable path"
        ref = b["0:" + key.split(":", 1)[1]]
        worst = max(worst, (float(np.abs(a[key] - ref).max() / (np.abs(ref).max() + 1e-30)), key.split(":", 1)[1]))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", action="append", default=[])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--out", default=str(HERE / "results" / "onednn-narrow.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker), args.calls, args.save)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for widths in args.widths or ["4,8,8", "8,8,8"]:
            w, out, path = [int(v) for v in widths.split(",")], {}, {f: f"{tmp}/{widths}-{f}.npz" for f in "10"}
            for flag in ("1", "0"):
                r = subprocess.run([sys.executable, __file__, "--calls", str(args.calls), "--worker", json.dumps(w),
                                    "--save", path[flag]], capture_output=True, text=True, check=True,
                                   env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": flag, "TF_CPP_MIN_LOG_LEVEL": "2"})
                out[flag] = json.loads(r.stdout.strip().splitlines()[-1])
            if not out["1"]["onednn"]:
                raise SystemExit("TF_ENABLE_ONEDNN_OPTS=1 did not turn oneDNN on here")
            one, eig = out["1"], out["0"]
            diff, at = against(path["1"], path["0"])
            rows.append(f"| {widths} | oneDNN | {one['change']:.3g} | {one['where'] or '-'} | {diff:.3g} ({at}) |")
            rows.append(f"| {widths} | Eigen | {eig['change']:.3g} | {eig['where'] or '-'} | - |")
            print(*rows[-2:], sep="\n", flush=True)
    lines = [f"# Gradients of a narrow network twice, oneDNN against Eigen ({time.strftime('%Y-%m-%d')})", "",
             f"`python bench/onednn_narrow.py`, on {cpu_model()} ({os.cpu_count()} cores): resnet-s, one block a "
             f"stage, the gradient of one fixed batch taken {args.calls} times in one process; the largest change "
             "between calls relative to the gradient's largest entry (0: the same bits every call); and, from the "
             "same initial weights, each of oneDNN's calls against Eigen's first (float sums in another order: about "
             "1e-5).", "",
             "| widths | TensorFlow's kernels | largest change between calls | where | oneDNN against Eigen (where) |",
             "| --- | --- | --- | --- | --- |", *rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
