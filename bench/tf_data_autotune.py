"""Check: how long does a tf.data epoch's iterator take to end, with tf.data's autotuning on and off?
And (`--throughput`) how fast does Keras' fit train through a pipeline with it on and off?

    python bench/tf_data_autotune.py [--epochs 3] [--matmuls 10]
    python bench/tf_data_autotune.py --throughput [--repeats 4] [--chunks 8]

clsf's training pipeline (clsf.data.tf_pipeline.make_dataset, the speedrun recipe's augmentation,
batch 128) over 50,000 random 32x32x3 images, each batch followed by a CPU-bound TensorFlow call
(`--matmuls` 1024x1024 products, about a training step's worth of work on two cores), for
`--epochs` epochs: as clsf builds it (autotuning off) and with its last stage as TensorFlow
leaves it (`prefetch(AUTOTUNE)`, autotuning on), each in a fresh process. For every epoch: the seconds to the last batch, and the
seconds the loop then waited for the iterator to end (the end of sequence and the iterator's
destruction). With autotuning on, an iterator that lived past ~41 s waited for tf.data's
optimisation thread, whose sleep doubles up to 60 s (bench/results/observations.md, O15).
Writes bench/results/tf-data-autotune.md.

`--throughput`: the classic Keras CIFAR-10 tutorial's CNN (bench/reference.py) trained by
`model.fit` at batch 32 on random float32 images, `--chunks` calls of 1,024 images each after a
warm-up call, fed three ways, each feed in `--repeats` fresh processes of its own, interleaved:
the arrays themselves (what the tutorial's script does: Keras builds the tf.data pipeline, with
autotuning on), a `from_tensor_slices(...).batch(32).prefetch(AUTOTUNE)` dataset as TensorFlow
leaves it (autotuning on), and the same dataset with autotuning off (as clsf builds its pipelines).
For each call: images/s and the cores the process kept busy (its CPU seconds over the wall's).
On a 2-core AMD EPYC, with autotuning on, whole calls ran at half speed with about one core busy
(bench/results/observations.md, O17). Writes bench/results/tf-data-autotune-throughput.md.
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

from common import HERE, cpu_model, fmt, med


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


def throughput_worker(feed: str, chunks: int) -> dict:
    """Keras' fit over `chunks` calls of CHUNK images, fed as `feed`: images/s and busy cores per call."""
    import numpy as np

    from clsf.frameworks import import_tf
    from reference import keras_model

    tf = import_tf()
    rng = np.random.default_rng(0)
    x = rng.random(((chunks + 1) * CHUNK, 32, 32, 3), dtype=np.float32)  # (N, H, W, C) in [0, 1]
    y = rng.integers(0, 10, len(x))
    model = keras_model(softmax=True)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def fit(xs, ys) -> None:
        if feed == "arrays":  # the tutorial's call: Keras makes the pipeline (autotuning on)
            model.fit(xs, ys, batch_size=BATCH, epochs=1, verbose=0)
            return
        ds = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(BATCH).prefetch(tf.data.AUTOTUNE)
        if feed == "off":
            options = tf.data.Options()
            options.autotune.enabled = False
            ds = ds.with_options(options)
        model.fit(ds, epochs=1, verbose=0)

    fit(x[:CHUNK], y[:CHUNK])  # warm-up: tracing, allocator growth
    calls = []
    for i in range(1, chunks + 1):
        part = slice(i * CHUNK, (i + 1) * CHUNK)
        c0, t0 = os.times(), time.perf_counter()
        fit(x[part], y[part])
        c1, wall = os.times(), time.perf_counter() - t0
        calls.append({"ips": CHUNK / wall, "cores": (c1.user - c0.user + c1.system - c0.system) / wall})
    return {"calls": calls}


FEEDS = {"arrays": "`fit(x, y)` on the arrays (the tutorial's script; autotuning on)",
         "on": "a tf.data dataset, autotuning on (TensorFlow's default)",
         "off": "the same dataset, autotuning off (as clsf's pipelines)"}
CHUNK, BATCH = 1024, 32
SLOW = 0.65  # a call under this fraction of the autotuning-off calls' median counts as slow


def throughput(args) -> int:
    calls = {feed: [] for feed in FEEDS}
    for r in range(args.repeats):  # interleaved: a machine that slows mid-run slows every feed alike
        for feed in FEEDS:
            cmd = [sys.executable, __file__, "--throughput-worker", feed, "--chunks", str(args.chunks)]
            res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            if res.returncode:
                raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
            got = json.loads(res.stdout.strip().splitlines()[-1])["calls"]
            calls[feed].extend(got)
            print(r, feed, [round(c["ips"]) for c in got], flush=True)
    ref = statistics.median(c["ips"] for c in calls["off"])
    out = args.out or str(HERE / "results" / "tf-data-autotune-throughput.md")
    lines = [f"# Keras fit's images/s with tf.data's autotuning on and off ({time.strftime('%Y-%m-%d')})", "",
             f"`python bench/tf_data_autotune.py --throughput --repeats {args.repeats} --chunks {args.chunks}`, on "
             f"{cpu_model()} ({os.cpu_count()} cores). The classic Keras CIFAR-10 tutorial's CNN trained by `model.fit` "
             f"at batch {BATCH} on random float32 images, {args.chunks} calls of {CHUNK:,} images per process after a "
             f"warm-up call, {args.repeats} fresh processes per feed, the feeds interleaved. *Slow calls*: under "
             f"{SLOW}x the median of the autotuning-off calls ({ref:,.0f} images/s); *cores busy*: the process's CPU "
             "seconds over the call's wall seconds (2 = both cores).", "",
             "| feed | calls | images/s (median, min-max) | slow calls | cores busy, slow calls | cores busy, the others |",
             "| --- | --- | --- | --- | --- | --- |"]
    for feed, label in FEEDS.items():
        slow = [c for c in calls[feed] if c["ips"] < SLOW * ref]
        rest = [c for c in calls[feed] if c["ips"] >= SLOW * ref]
        busy = lambda cs: fmt(med([c["cores"] for c in cs]), 2) if cs else "-"  # noqa: E731
        lines.append(f"| {label} | {len(calls[feed])} | {fmt(med([c['ips'] for c in calls[feed]]))} | "
                     f"{len(slow)} | {busy(slow)} | {busy(rest)} |")
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--matmuls", type=int, default=10)
    ap.add_argument("--throughput", action="store_true", help="Keras fit's images/s with autotuning on and off")
    ap.add_argument("--repeats", type=int, default=4, help="--throughput: fresh processes per feed")
    ap.add_argument("--chunks", type=int, default=8, help=f"--throughput: fit calls of {CHUNK:,} images per process")
    ap.add_argument("--out", help="the results file (default: bench/results/tf-data-autotune[-throughput].md)")
    ap.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--throughput-worker", choices=list(FEEDS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.throughput_worker:
        print(json.dumps(throughput_worker(args.throughput_worker, args.chunks)))
        return 0
    if args.throughput:
        return throughput(args)
    args.out = args.out or str(HERE / "results" / "tf-data-autotune.md")
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
