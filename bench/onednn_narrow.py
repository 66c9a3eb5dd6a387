"""Check: does TensorFlow's oneDNN compute a narrow network's gradients the same twice?

    python bench/onednn_narrow.py [--widths 4,8,8 --widths 8,8,8] [--calls 20]

For each width list, in a fresh process each with TF_ENABLE_ONEDNN_OPTS=1 and =0: resnet-s (one
block a stage) on one fixed batch of 32 random 10x10x3 images, the gradient of the loss taken
`--calls` times by one tf.function; the largest change of any variable's gradient between calls,
relative to that gradient's largest entry. Pure arithmetic on the same inputs: anything but 0 is a
kernel that reads what it should not (observations.md, O14). Writes bench/results/onednn-narrow.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import HERE, cpu_model


def worker(widths: list[int], calls: int) -> dict:
    import numpy as np

    from clsf.frameworks import import_tf

    tf = import_tf()
    import keras

    from clsf.engines.tf_kernels import onednn_enabled
    from clsf.models.keras import build_keras
    from clsf.models.zoo import get_spec

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

    first = [g.numpy() for g in grads(x, y)]
    worst, where = 0.0, ""
    for _ in range(calls - 1):
        for v, a, b in zip(model.trainable_variables, first, [g.numpy() for g in grads(x, y)]):
            change = float(np.abs(a - b).max() / (np.abs(a).max() + 1e-30))
            if change > worst:
                worst, where = change, v.path
    return {"onednn": onednn_enabled(), "change": worst, "where": where}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", action="append", default=[])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--out", default=str(HERE / "results" / "onednn-narrow.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker), args.calls)))
        return 0
    rows = []
    for widths in args.widths or ["4,8,8", "8,8,8"]:
        for flag in ("1", "0"):
            w = [int(v) for v in widths.split(",")]
            r = subprocess.run([sys.executable, __file__, "--calls", str(args.calls), "--worker", json.dumps(w)],
                               capture_output=True, text=True, check=True,
                               env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": flag, "TF_CPP_MIN_LOG_LEVEL": "2"})
            out = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append(f"| {widths} | {'oneDNN' if out['onednn'] else 'Eigen'} | {out['change']:.3g} | {out['where'] or '-'} |")
            print(rows[-1], flush=True)
    lines = [f"# Gradients of a narrow network twice, oneDNN against Eigen ({time.strftime('%Y-%m-%d')})", "",
             f"`python bench/onednn_narrow.py`, on {cpu_model()} ({os.cpu_count()} cores): resnet-s, one block a "
             f"stage, the gradient of one fixed batch taken {args.calls} times in one process; the largest change "
             "between calls relative to the gradient's largest entry (0: the same bits every call).", "",
             "| widths | TensorFlow's kernels | largest change | where |", "| --- | --- | --- | --- |", *rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
