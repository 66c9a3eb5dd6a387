"""Benchmark: how fast each engine trains and evaluates `seed-cnn` on CIFAR-10, as ratios to the
machine's own ceiling and to the naive reference loops (bench/reference.py), measured in one run.

    python bench/speed.py --data ../shared/data/cifar10-jpeg.tar.gz [--repeats 3] [--images 8192]

Absolute speed on shared machines moves 2-3x between machines and hours, so every figure is also a
ratio measured in this run:
  - efficiency = training FLOP/s / sgemm FLOP/s. Training FLOPs = 3 x the forward FLOPs the spec
    counts (clsf.models.spec.forward_flops; tested equal to torch's FlopCounterMode); sgemm is
    the best of torch.mm and numpy on 2048x2048 float32 with this process's threads, measured
    before, between and after the configurations (its spread is in the table);
  - "vs reference" = images/s / the reference loop's images/s for the same framework and batch.
Every configuration runs in its own process, `--repeats` times, interleaved (configuration 1..N,
then again) so a machine that slows down mid-run slows every configuration alike; the tables give
the median with min-max. A process trains one warm-up epoch on 1,024 images (tracing, compiling,
allocator growth: excluded), then times one epoch on `--images` images and one evaluation of the
10,000 test images (after a warm-up call). Peak memory is the process's maximum resident set.
Results: bench/results/speed-<cpu>-<cores>c-<date>.md and .json (CPU model, threads, library versions).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, cpu_model, fmt, med, versions
WARM = 1024  # warm-up images per process (excluded from the timing)
# (label, kind, framework, batch, config overrides)
CONFIGS = [
    ("keras", "clsf", "keras", 32, []), ("keras", "clsf", "keras", 128, []),
    ("tf", "clsf", "tf", 32, []), ("tf", "clsf", "tf", 128, []),
    ("tf eager", "clsf", "tf", 32, ["tf.mode=eager"]), ("tf xla", "clsf", "tf", 32, ["tf.mode=xla"]),
    ("torch", "clsf", "torch", 32, []), ("torch", "clsf", "torch", 128, []),
    ("torch compile", "clsf", "torch", 32, ["torch.compile=true"]),
    ("torch NCHW", "clsf", "torch", 32, ["torch.channels_last=false"]),
    # Keras' other backends (each its own process, as always here): fit compiled and not
    ("keras xla", "clsf", "keras", 32, ["tf.mode=xla"]),
    ("keras-jax", "clsf", "keras-jax", 32, []), ("keras-jax", "clsf", "keras-jax", 128, []),
    ("keras-jax no jit", "clsf", "keras-jax", 32, ["tf.mode=eager"]),
    ("keras-torch", "clsf", "keras-torch", 32, []), ("keras-torch", "clsf", "keras-torch", 128, []),
    ("keras-torch jit", "clsf", "keras-torch", 32, ["tf.mode=xla"]),
    ("reference keras", "reference", "keras", 32, []), ("reference keras", "reference", "keras", 128, []),
    ("reference tf", "reference", "tf", 32, []), ("reference tf", "reference", "tf", 128, []),
    ("reference torch", "reference", "torch", 32, []), ("reference torch", "reference", "torch", 128, []),
]
# rows where the device computes in bf16: a GPU, or a CPU with bf16 matrix instructions (AMX)
BF16_CONFIGS = [("torch bf16", "clsf", "torch", 128, ["precision=bf16"]), ("keras bf16", "clsf", "keras", 128, ["precision=bf16"])]


# -- workers: each runs in its own process and prints one JSON line --------------------------------

def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def work_sgemm(_job) -> dict:
    import numpy as np
    import torch

    n, out = 2048, {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    for name, mm, args in (("torch", torch.mm, (a, b)), ("numpy", np.matmul, (a.numpy(), b.numpy()))):
        mm(*args)  # warm-up: threads start, pages touched
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            mm(*args)
            times.append(time.perf_counter() - t0)
        out[name] = 2 * n**3 / min(times) / 1e9  # GFLOP/s of the fastest of 7
    return {"gflops": max(out.values()), "by": out, "threads": torch.get_num_threads()}


def work_load(job) -> dict:
    os.environ["CLSF_CACHE"] = job["cache"]  # cold: an empty cache; cached: the one the cold call filled
    from clsf.data import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(job["data"])
    return {"seconds": time.perf_counter() - t0, "images": sum(len(s) for s in ds.splits.values()), "peak_mb": peak_mb()}


def seed_cnn_engine(framework: str, batch: int, steps_per_epoch: int, overrides=(), epochs: int = 2, recipe=None):
    """(config, engine) for seed-cnn on CIFAR-sized images, standardised with CIFAR-10's channel
    statistics (on the 0..1 scale), as the benchmarks time it; `recipe` goes under the overrides."""
    from clsf.config import build_config
    from clsf.engines import create_engine
    from clsf.run.setup import build_spec

    cfg = build_config(flags={"engine": framework, "batch_size": batch, "epochs": epochs},
                       overrides=["model.name=seed-cnn", "data.scale=standardize", "data.mean=[0.491, 0.482, 0.447]",
                                  "data.std=[0.247, 0.243, 0.262]", *overrides], recipe=recipe)
    return cfg, create_engine(cfg, build_spec(cfg, (32, 32, 3), 10), steps_per_epoch)


def work_train(job) -> dict:
    import numpy as np

    with np.load(job["arrays"]) as z:
        x, y, xt, yt = z["x"], z["y"], z["xt"], z["yt"]
    n, b = job["images"], job["batch"]
    if job["kind"] == "reference":
        from reference import LOOPS

        loop = LOOPS[job["framework"]](b)
        t0 = time.perf_counter()
        xf, xtf = loop.prepare(x[: WARM + n]), loop.prepare(xt)
        prep = time.perf_counter() - t0
        loop.train(xf[:WARM], y[:WARM])
        train_s = loop.train(xf[WARM:], y[WARM: WARM + n])
        loop.evaluate(xtf[:1000], yt[:1000])
        eval_s = loop.evaluate(xtf, yt)
        device = "cpu"
    else:
        from clsf.engines.base import Meter

        _, engine = seed_cnn_engine(job["framework"], b, -(-n // b), job["overrides"])
        engine.train_epoch(x[:WARM], y[:WARM], 0, Meter(0, 0, WARM, b))
        t0 = time.perf_counter()
        engine.train_epoch(x[WARM: WARM + n], y[WARM: WARM + n], 1, Meter(1, engine.global_step(), n, b))
        train_s = time.perf_counter() - t0
        engine.predict_logits(xt[:1000])
        t0 = time.perf_counter()
        engine.predict_logits(xt)
        eval_s, prep, device = time.perf_counter() - t0, 0.0, engine.device
    return {"train_ips": n / train_s, "eval_ips": len(xt) / eval_s, "prep_s": prep, "peak_mb": peak_mb(), "device": device}


# -- the run: every configuration in its own process -----------------------------------------------

def worker(job: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if r.returncode != 0:
        raise SystemExit(f"worker failed: {job}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="CIFAR-10 (the JPEG tarball, a folder or the python batches)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=8192, help="training images timed per process")
    ap.add_argument("--only", help="comma-separated labels to run (e.g. 'torch,reference torch')")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps({"sgemm": work_sgemm, "load": work_load}.get(job["kind"], work_train)(job)))
        return 0
    if not args.data:
        ap.error("--data is required")

    from clsf.models.spec import forward_flops
    from clsf.models.zoo import get_spec

    flops = 3 * forward_flops(get_spec("seed-cnn"))  # per training image: forward + backward
    from clsf.engines.precision import cpu_has_bf16

    configs = CONFIGS + (BF16_CONFIGS if shutil.which("nvidia-smi") or cpu_has_bf16() else [])
    if args.only:
        keep = set(args.only.split(","))
        configs = [c for c in configs if c[0] in keep]
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("loading the data: cold (decode into an empty cache), then cached", flush=True)
        load = {"cold": worker({"kind": "load", "data": args.data, "cache": str(tmp / "cache")}),
                "cached": worker({"kind": "load", "data": args.data, "cache": str(tmp / "cache")})}
        os.environ["CLSF_CACHE"] = str(tmp / "cache")
        from clsf.data import load_dataset

        ds = load_dataset(args.data)
        arrays = tmp / "arrays.npz"
        import numpy as np

        n = WARM + args.images
        np.savez(arrays, x=ds["train"].x[:n], y=ds["train"].y[:n], xt=ds["test"].x, yt=ds["test"].y)
        sgemm = [worker({"kind": "sgemm"})]
        results: dict[int, list[dict]] = {i: [] for i in range(len(configs))}
        for rep in range(args.repeats):
            for i, (label, kind, fw, batch, overrides) in enumerate(configs):
                print(f"[{rep + 1}/{args.repeats}] {label} batch {batch}", flush=True)
                results[i].append(worker({"kind": kind, "framework": fw, "batch": batch, "overrides": overrides,
                                          "arrays": str(arrays), "images": args.images}))
            sgemm.append(worker({"kind": "sgemm"}))

    ceiling = med([s["gflops"] for s in sgemm])
    ref = {(c[2], c[3]): statistics.median(r["train_ips"] for r in results[i]) for i, c in enumerate(configs) if c[1] == "reference"}
    ref_eval = {(c[2], c[3]): statistics.median(r["eval_ips"] for r in results[i]) for i, c in enumerate(configs) if c[1] == "reference"}
    rows = []
    for i, (label, kind, fw, batch, overrides) in enumerate(configs):
        rs = results[i]
        train, ev = med([r["train_ips"] for r in rs]), med([r["eval_ips"] for r in rs])
        eff = med([r["train_ips"] * flops / 1e9 / ceiling[0] for r in rs])
        key = (fw, batch) if (fw, batch) in ref else (fw, 32)
        rows.append({"label": label, "kind": kind, "framework": fw, "batch": batch, "overrides": overrides,
                     "device": rs[0]["device"], "train_ips": train, "eval_ips": ev, "efficiency": eff,
                     "vs_reference": train[0] / ref[key] if key in ref else None,
                     "eval_vs_reference": ev[0] / ref_eval[key] if key in ref_eval else None,
                     "peak_mb": statistics.median(r["peak_mb"] for r in rs), "prep_s": statistics.median(r["prep_s"] for r in rs),
                     "samples": rs})
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), **versions()}
    report = {"started": started, "machine": machine, "sgemm_gflops": [s["gflops"] for s in sgemm], "sgemm": sgemm,
              "train_flops_per_image": flops, "images_timed": args.images, "repeats": args.repeats,
              "load": load, "rows": rows}
    lines = [f"# Speed: seed-cnn on CIFAR-10 ({started})", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores; python {machine['python']}, "
             + ", ".join(f"{k} {v}" for k, v in machine.items() if k not in ("cpu", "cores", "python")) + ".",
             f"sgemm ceiling (2048x2048 float32, {sgemm[0]['threads']} threads): median {fmt(ceiling, 0, ' GFLOP/s')} over "
             f"{len(sgemm)} measurements spread through the run. Training costs {flops / 1e6:.1f} MFLOP per image "
             f"(3x the forward pass). Each figure: median (min-max) of {args.repeats} processes, {args.images:,} training "
             "images timed after a 1,024-image warm-up, then the 10,000 test images.", "",
             "| configuration | batch | train images/s | efficiency (of sgemm) | vs reference | eval images/s | eval vs reference | peak MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        vs = "1.00x" if r["kind"] == "reference" else (f"{r['vs_reference']:.2f}x" if r["vs_reference"] else "-")
        evs = "1.00x" if r["kind"] == "reference" else (f"{r['eval_vs_reference']:.2f}x" if r["eval_vs_reference"] else "-")
        lines.append(f"| {r['label']} | {r['batch']} | {fmt(r['train_ips'])} | {fmt(tuple(100 * v for v in r['efficiency']), 0, '%')} "
                     f"| {vs} | {fmt(r['eval_ips'])} | {evs} | {r['peak_mb']:,.0f} |")
    prep = [r["prep_s"] for r in rows if r["kind"] == "reference"]  # none when --only leaves the references out
    lines += ["", "Loading the data (one process each): "
              f"cold {load['cold']['seconds']:.1f} s (decode {load['cold']['images']:,} images into an empty cache), "
              f"cached {load['cached']['seconds']:.2f} s."
              + (f" The reference loops' own conversion to float64 (`x / 255.0`, once per run) took a median "
                 f"{statistics.median(prep):.2f} s for {args.images + WARM + 10000:,} images." if prep else "")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # e.g. "Intel(R) Xeon(R) Processor" -> intel-xeon: the results' one naming scheme, SCRIPT[-VARIANT]
    words = re.sub(r"\((r|tm)\)|\b(processor|cpu|\d+-core)\b", " ", machine["cpu"].lower())
    slug = re.sub(r"[^a-z0-9]+", "-", words).strip("-")[:40]
    stem = out / f"speed-{slug}-{machine['cores']}c-{time.strftime('%Y-%m-%d')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"-> {stem}.md / .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
