"""Benchmark: what keeping freed memory (clsf.frameworks.keep_freed_memory) buys, per workload.

    python bench/allocator.py [--rounds 3]

Each workload runs as a whole process with glibc's default malloc (CLSF_MALLOC=default) and with
clsf's setting, alternating A and B each round (these machines' speed moves within minutes):
EfficientNet-Lite0 at 128 px (inference on 1,000 images in batches of 32, and a training epoch on 500),
and airbench (a training epoch on 2,000 images), on seeded random images in the torch engine. Writes
bench/results/allocator.md.
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

WORK = r"""
import json, sys, time, numpy as np
from clsf.config import build_config
from clsf.engines import create_engine
from clsf.engines.base import Meter
from clsf.models.zoo import get_spec
what = sys.argv[1]
model, size, n = {"lite0-infer": ("efficientnet-lite0", 128, 1000), "lite0-train": ("efficientnet-lite0", 128, 500),
                  "airbench-train": ("airbench", 32, 2000)}[what]
cfg = build_config(flags={"engine": "torch", "batch_size": 32}, overrides=[f"model.name={model}", "eval_batch_size=32"])
spec = get_spec(model, 10, (size, size, 3))
x = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
y = np.arange(n) % 10
engine = create_engine(cfg, spec, -(-n // 32))
t = time.perf_counter()
if what.endswith("infer"):
    engine.predict_logits(x)
else:
    engine.train_epoch(x, y, 0, Meter(0, 0, n, 32))
print(json.dumps({"seconds": time.perf_counter() - t}))
"""
WORKLOADS = {"lite0-infer": "EfficientNet-Lite0, 128 px: inference on 1,000 images",
             "lite0-train": "EfficientNet-Lite0, 128 px: a training epoch on 500 images",
             "airbench-train": "airbench, 32 px: a training epoch on 2,000 images"}


def timed(what: str, default_malloc: bool) -> float:
    env = {**os.environ, **({"CLSF_MALLOC": "default"} if default_malloc else {})}
    r = subprocess.run([sys.executable, "-c", WORK, what], capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["seconds"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "allocator.md"))
    args = p.parse_args()
    times = {w: {"default": [], "kept": []} for w in WORKLOADS}
    for r in range(args.rounds):
        for w in WORKLOADS:
            for kind in (("default", "kept") if r % 2 == 0 else ("kept", "default")):
                times[w][kind].append(timed(w, kind == "default"))
                print(w, kind, f"{times[w][kind][-1]:.2f} s", flush=True)
    lines = [f"# Keeping freed memory: glibc's malloc against clsf's setting ({time.strftime('%Y-%m-%d')})", "",
             f"`python bench/allocator.py --rounds {args.rounds}`: each workload a whole process in the torch engine, "
             f"A and B alternating each round. CPU: {cpu_model()} ({os.cpu_count()} cores). clsf raises glibc's mmap and "
             "trim thresholds (clsf.frameworks.keep_freed_memory), so blocks a network frees are reused instead of "
             "handed back to the OS and faulted in again on the next step.", "",
             "| workload | glibc's default, s (median, min-max) | kept, s (median, min-max) | speed-up (medians) |",
             "| --- | --- | --- | --- |"]
    for w, label in WORKLOADS.items():
        a, b = times[w]["default"], times[w]["kept"]
        lines.append(f"| {label} | {statistics.median(a):.2f} ({min(a):.2f}-{max(a):.2f}) | "
                     f"{statistics.median(b):.2f} ({min(b):.2f}-{max(b):.2f}) | {statistics.median(a) / statistics.median(b):.2f}x |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
