"""Check: how long does a tf.data epoch's iterator take to end, with tf.data's autotuning on and off?

    python bench/tf_data_autotune.py [--epochs 3] [--matmuls 10]

clsf's training pipeline (clsf.data.tf_pipeline.make_dataset, the speedrun recipe's augmentation,
batch 128) over 50,000 random 32x32x3 images, each batch followed by a CPU-bound TensorFlow call
(`--matmuls` 1024x1024 products, about a training step's worth of work on two cores), for
`--epochs` epochs: as clsf builds it (autotuning off) and with its last stage as TensorFlow
leaves it (`prefetch(AUTOTUNE)`, autotuning on), each in a fresh process. For every epoch: the seconds to the last batch, and the
seconds the loop then waited for the iterator to end (the end of sequence and the iterator's
destruction). With autotuning on, an iterator that lived past ~41 s waited for tf.data's
optimisation thread, whose sleep doubles up to 60 s (bench/results/observations.md, O15).
Writes bench/results/tf-data-autotune.md.
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


def worker(autotune: bool, epochs: int, matmuls: int) -> dict:
    import numpy as np

    from clsf.config import build_config
    from clsf.data import tf_pipeline
    from clsf.data.tf_pipeline import make_dataset
    from clsf.data.transforms import Preprocess, channel_stats
    from clsf.frameworks import import_tf

    tf = import_tf()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C) uint8, as a dataset holds them
    y = rng.integers(0, 10, 50_000)
    pre = Preprocess.of(build_config(None, {}, [], "speedrun").data)
    pre.mean, pre.std = channel_stats(x)  # standardize: the split's own statistics, as a run fills them
    m = tf.random.normal((1024, 1024))
    if autotune:  # the pipeline's last stage as TensorFlow's own default leaves it (a later with_options did not re-enable it)
        tf_pipeline.finish = lambda ds: ds.prefetch(tf.data.AUTOTUNE)

    @tf.function
    def step(xb):  # a stand-in for the training step: two cores busy for ~0.1-0.2 s
        a = m
        for _ in range(matmuls):
            a = tf.matmul(a, m) * 1e-3
        return tf.reduce_sum(a) + tf.reduce_sum(xb)

    rows = []
    for epoch in range(epochs):
        ds = make_dataset(x, y, 128, pre, training=True, seed=0, epoch=epoch)
        enabled = ds.options().autotune.enabled is not False  # None: TensorFlow's default, on
        t0 = time.perf_counter()
        it = iter(ds)
        batches = 0
        for xb, _ in it:
            float(step(xb))
            batches += 1
            last = time.perf_counter()
        del it  # the iterator's destructor: where the wait was
        rows.append({"batches": batches, "to_last": last - t0, "end": time.perf_counter() - last,
                     "autotune": enabled})
    return {"rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--matmuls", type=int, default=10)
    ap.add_argument("--out", default=str(HERE / "results" / "tf-data-autotune.md"))
    ap.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "on", args.epochs, args.matmuls)))
        return 0

    results = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, __file__, "--worker", mode, "--epochs", str(args.epochs), "--matmuls", str(args.matmuls)]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if r.returncode:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
        results[mode] = json.loads(r.stdout.strip().splitlines()[-1])["rows"]
        print(mode, results[mode], flush=True)

    lines = [f"# How long a tf.data epoch's iterator takes to end ({time.strftime('%Y-%m-%d')})", "",
             f"`python bench/tf_data_autotune.py --epochs {args.epochs} --matmuls {args.matmuls}`, on {cpu_model()} "
             f"({os.cpu_count()} cores). clsf's training pipeline (speedrun augmentation, batch 128) over 50,000 random "
             f"32x32x3 images, each batch followed by {args.matmuls} 1024x1024 matrix products in TensorFlow (a step's "
             "worth of work); each mode in a fresh process. *To the last batch*: seconds from the iterator's start to "
             "its last batch; *end*: seconds from there until the iterator had signalled its end and was destroyed "
             "(the CPU idle meanwhile).", "",
             "| tf.data autotuning | epoch | batches | to the last batch (s) | end (s) |", "| --- | --- | --- | --- | --- |"]
    for mode, label in (("off", "off (clsf)"), ("on", "on (TensorFlow's default; clsf before O15)")):
        for i, row in enumerate(results[mode]):
            assert row["autotune"] == (mode == "on"), row  # the option took
            lines.append(f"| {label} | {i + 1} | {row['batches']} | {row['to_last']:.1f} | {row['end']:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
