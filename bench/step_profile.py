"""Profile: where one training step of a zoo model (`seed-cnn` unless --model) goes, per engine, and so what bounds it.

    python bench/step_profile.py --data ../shared/data/cifar10-jpeg.tar.gz [--batch 32] [--steps 200]
                                 [--engines keras,tf,torch,keras-jax,keras-torch] [--model airbench]
                                 [--recipe speedrun-muon] [--set torch.channels_last=false]
                                 [--versus precision=bf16] [--versus-engines keras-jax] [--out FILE]

Each engine runs in its own process. The step is taken apart by ablation, every part timed on the
same batches already in memory, each the median of 5 passes over `--steps` steps:
  data       the engine's own pipeline producing batches (uint8 gather, augmentation, normalise)
  forward    the engine's model in training mode (dropout on), no gradient
  backward   forward + the engine's loss + gradients, minus forward
  optimizer  the engine's own step (torch: TorchLoopEngine.train_step; tf: the engine's tf.function;
             keras and the Keras backends: Keras' train_step), minus forward + backward
  loop       the engine's train_epoch, minus data and the whole step: per-step Python, metric
             bookkeeping, synchronisation
For torch, torch.profiler also splits the step by operator (convolution, dense, pooling, the
optimizer's update, the rest); for keras-jax, a jax.profiler trace splits it by XLA's thunks, each
put to the Keras layer its HLO metadata names (xla_split below). --versus KEY=VALUE adds, for every
engine (or those --versus-engines names), a row with that setting too, profiled right after the
engine's own row in the same run (an A/B of one key: precision, memory layout); --versus
env:NAME=VALUE does the same with an environment variable set in the engine's process
(TF_ENABLE_ONEDNN_OPTS=0: TensorFlow's Eigen kernels; XLA_FLAGS=...: keras-jax alone, with
--versus-engines keras-jax). Writes bench/results/step-profile.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, cpu_model


def timed(fn, steps: int, repeats: int = 5) -> float:
    """Median seconds per step of fn() called `steps` times, after one warm-up pass."""
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        runs.append((time.perf_counter() - t0) / steps)
    return statistics.median(runs)


def cycle(fn, batches):
    """fn(xb, yb) on the next of `batches` at each call, round and round."""
    state = {"i": 0}

    def call():
        fn(*batches[state["i"] % len(batches)])
        state["i"] += 1
    return call


MODEL = {"name": "seed-cnn", "set": [], "recipe": None}  # --model, --set and --recipe, for the workers


def engine_for(name: str, batch: int, steps: int):
    from speed import seed_cnn_engine  # the engine exactly as bench/speed.py times it (another model: --model)

    return seed_cnn_engine(name, batch, steps, overrides=[f"model.name={MODEL['name']}", *MODEL["set"]], epochs=50,
                           recipe=MODEL["recipe"])


def profile_torch(x, y, batch: int, steps: int) -> dict:
    import torch

    from clsf.data.torch_pipeline import Batches
    from clsf.engines.base import Meter

    _, engine = engine_for("torch", batch, steps)
    n = batch * steps
    batches = [(xb.contiguous(memory_format=engine.memory_format), yb)  # as the engine's step lays them out
               for xb, yb in Batches(x[:n], y[:n], batch, engine.pre, training=True, seed=0)]
    engine.model.train()
    opt = engine.optimizer

    def amp():  # the engine's mixed precision (precision=bf16|fp16|auto), as its own step runs the forward pass
        return torch.autocast(engine.torch_device.type, dtype=engine.amp or torch.bfloat16, enabled=engine.amp is not None)

    # the ablations are the engine's own parts (its forward, its loss); the step is its train_step itself
    def forward(xb, yb):
        with torch.no_grad(), amp():
            engine.forward(xb)

    def fwd_bwd(xb, yb):
        with amp():
            logits = engine.forward(xb).float()
        engine.loss.torch(logits, yb).mean().backward()

    def step(xb, yb):
        engine.train_step(xb, yb)

    parts = {"data": timed(lambda: list(Batches(x[:n], y[:n], batch, engine.pre, training=True, seed=0)), 1) / steps,
             "forward": timed(cycle(forward, batches), steps), "forward+backward": timed(cycle(fwd_bwd, batches), steps),
             "step": timed(cycle(step, batches), steps)}
    parts["epoch"] = timed(lambda: engine.train_epoch(x[:n], y[:n], 0, Meter(0, 0, n, batch)), 1) / steps

    # operators: which kernels the step's time goes to
    from torch.profiler import ProfilerActivity, profile, record_function

    update = opt.step

    def marked_update(*args, **kwargs):  # the optimizer's update, marked inside the engine's own step
        with record_function("clsf.optimizer"):
            return update(*args, **kwargs)

    opt.step = marked_update
    profiled_step = step

    traced = max(3, 6400 // batch)  # ~6,400 images: 50 steps at batch 128, 3 at 2000
    for i in range(max(1, traced // 5)):
        profiled_step(*batches[i % len(batches)])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(traced):
            profiled_step(*batches[i % len(batches)])
    ops = {"convolution": 0.0, "dense": 0.0, "pooling": 0.0, "optimizer": 0.0, "other": 0.0}
    for e in prof.key_averages():
        name, t = e.key, e.self_cpu_time_total
        if name == "clsf.optimizer" or name.startswith("aten::_foreach") or (name in ("aten::mul_", "aten::add_", "aten::addcdiv_",
                                                                                       "aten::lerp_", "aten::sqrt", "aten::addcmul_")):
            ops["optimizer"] += t
        elif "conv" in name:
            ops["convolution"] += t
        elif name in ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul"):
            ops["dense"] += t
        elif "pool" in name:
            ops["pooling"] += t
        else:
            ops["other"] += t
    total = sum(ops.values())
    return {"parts": parts, "ops": {k: v / total for k, v in ops.items()}, "threads": torch.get_num_threads()}


def profile_tf(name: str, x, y, batch: int, steps: int) -> dict:
    from clsf.frameworks import import_tf

    tf = import_tf()  # first through clsf, as the engines import it (its oneDNN default: observations.md, O13)

    from clsf.data.tf_pipeline import make_dataset
    from clsf.engines.base import Meter

    _, engine = engine_for(name, batch, steps)
    n = batch * steps
    batches = [(xb, yb) for xb, yb in make_dataset(x[:n], y[:n], batch, engine.pre, training=True)]
    model, loss_fn = engine.model, engine.loss_fn
    h, w, c = x.shape[1:]
    sig = [tf.TensorSpec([None, h, w, c], tf.float32), tf.TensorSpec([None], tf.int64)]

    @tf.function(input_signature=sig)
    def forward(xb, yb):
        return model(xb, training=True)

    @tf.function(input_signature=sig)
    def fwd_bwd(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        return tape.gradient(loss, model.trainable_variables)

    if name == "tf":  # the engine's own step: its tf.function (GradientTape, update, loss and correct count)
        step = engine.train_step
    else:  # keras: Keras' own train_step, in the tf.function fit wraps it in (fit's iterator aside)
        step = tf.function(lambda xb, yb: model.train_step((xb, yb))["loss"], input_signature=sig)

    def wait(fn):  # read the result, as a loop reading the loss does: TF runs ops asynchronously
        return lambda xb, yb: (lambda out: (out[0] if isinstance(out, (list, tuple)) else out).numpy())(fn(xb, yb))

    parts = {"data": timed(lambda: [None for _ in make_dataset(x[:n], y[:n], batch, engine.pre, training=True)], 1) / steps,
             "forward": timed(cycle(wait(forward), batches), steps),
             "forward+backward": timed(cycle(wait(fwd_bwd), batches), steps), "step": timed(cycle(wait(step), batches), steps)}
    parts["epoch"] = timed(lambda: engine.train_epoch(x[:n], y[:n], 0, Meter(0, 0, n, batch)), 1) / steps
    return {"parts": parts, "ops": None, "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                                                     tf.config.threading.get_inter_op_parallelism_threads()]}


def profile_keras_backend(name: str, x, y, batch: int, steps: int) -> dict:
    """keras-jax / keras-torch: the same parts, through the backend's own machinery. The step is
    Keras' train_step as fit runs it: on JAX jitted over the (trainable, non-trainable, optimizer,
    metrics) state arrays, on torch called eagerly (zero_grad, forward, loss, backward, update)."""
    from clsf.data.numpy_pipeline import NumpyBatches
    from clsf.engines.base import Meter

    _, engine = engine_for(name, batch, steps)  # imports Keras on its backend first
    import keras

    n = batch * steps
    feed = NumpyBatches(x[:n], y[:n], batch, engine.pre, True, 0, 0)
    model, loss_fn = engine.model, engine.model.loss
    model.make_train_function()
    as_tensors = [(keras.ops.convert_to_tensor(xb), keras.ops.convert_to_tensor(yb)) for xb, yb in
                  (feed[i] for i in range(len(feed)))]  # on the backend's device, as fit hands them on
    if name == "keras-jax":
        import jax

        import jax.numpy as jnp

        # copies: the step donates its state (as fit does), and the variables' own arrays must survive it
        state = [[jnp.array(v.value) for v in vs] for vs in (model.trainable_variables, model.non_trainable_variables,
                                                             engine.optimizer.variables, model.metrics_variables)]

        @jax.jit
        def fwd(tv, ntv, xb):
            return model.stateless_call(tv, ntv, xb, training=True)[0]

        @jax.jit
        @jax.grad
        def grads(tv, ntv, xb, yb):
            return loss_fn(yb, model.stateless_call(tv, ntv, xb, training=True)[0])

        train_step = jax.jit(model.train_step, donate_argnums=0)  # as fit's make_train_function compiles it

        def forward(xb, yb):
            fwd(state[0], state[1], xb).block_until_ready()

        def fwd_bwd(xb, yb):
            jax.block_until_ready(grads(state[0], state[1], xb, yb))

        def step(xb, yb):
            logs, new = train_step(tuple(state), (xb, yb))
            jax.block_until_ready(logs)
            state[:] = list(new)
    else:
        import torch

        def forward(xb, yb):
            with torch.no_grad():
                model(xb, training=True)

        def fwd_bwd(xb, yb):
            for v in model.trainable_variables:
                v.value.grad = None
            loss_fn(yb, model(xb, training=True)).backward()

        def step(xb, yb):
            model.train_step((xb, yb))

    parts = {"data": timed(lambda: [feed[i] for i in range(len(feed))], 1) / steps,
             "forward": timed(cycle(forward, as_tensors), steps), "forward+backward": timed(cycle(fwd_bwd, as_tensors), steps),
             "step": timed(cycle(step, as_tensors), steps)}
    parts["epoch"] = timed(lambda: engine.train_epoch(x[:n], y[:n], 0, Meter(0, 0, n, batch)), 1) / steps
    ops = xla_split(model, train_step.lower(tuple(state), as_tensors[0]).compile().as_text(),
                    cycle(step, as_tensors)) if name == "keras-jax" else None
    return {"parts": parts, "ops": ops, "threads": None}


def xla_split(model, hlo: str, step, traced: int = 2) -> dict:
    """keras-jax: milliseconds per step by what XLA's thunks compute, from a jax.profiler trace of
    `traced` steps. Each thunk is put to the Keras layer its HLO metadata names (`jvp(b1_pool)`: the
    layer b1_pool, a MaxPooling2D), a transpose or copy without one to "layout copies", and the rest
    (the optimizer, the loss) to "no layer". XLA's own (Eigen) convolutions do not show as thunks of
    their own: they are the step's wall time outside every thunk. Thunks run on two threads, so each
    group's share of the thunks' combined time is scaled to the wall time they covered."""
    import glob
    import gzip
    import re

    import jax

    kinds = {layer.name: type(layer).__name__ for layer in model._flatten_layers(include_self=False)}
    names, called = {}, {}  # instruction -> op_name; instruction -> fused computation it calls
    computation, first_name = None, {}  # computation -> the first op_name inside it
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
        if head:
            computation = head.group(1)
            continue
        inst = re.match(r"^\s+(?:ROOT )?%([\w.\-]+) = ", line)
        if not inst:
            continue
        op = re.search(r'op_name="([^"]+)"', line)
        calls = re.search(r"calls=%([\w.\-]+)", line)
        if op:
            names[inst.group(1)] = op.group(1)
            first_name.setdefault(computation, op.group(1))
        if calls:
            called[inst.group(1)] = calls.group(1)

    def group(thunk: str) -> str:
        op = names.get(thunk) or first_name.get(called.get(thunk, ""), "")
        layers = [n for n in re.findall(r"\(([\w\-]+)\)", op) if n in kinds]
        if layers:
            return kinds[layers[-1]]
        return "layout copies" if re.match(r"(transpose|copy)", thunk) else "no layer (optimizer, loss)"

    with tempfile.TemporaryDirectory() as tmp:
        step()  # warm
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            t0 = time.perf_counter()  # the steps alone: starting and writing the trace take seconds
            for _ in range(traced):
                step()
            wall = (time.perf_counter() - t0) / traced
        with gzip.open(glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True)[0]) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    thunks = [e for e in events if e.get("ph") == "X" and e.get("args", {}).get("hlo_op") == e["name"]]
    covered, start, end = 0.0, None, None  # the wall time inside at least one thunk (microseconds)
    for a, b in sorted((e["ts"], e["ts"] + e["dur"]) for e in thunks):
        if end is not None and a <= end:
            end = max(end, b)
            continue
        covered += end - start if end is not None else 0.0
        start, end = a, b
    covered = (covered + (end - start if end is not None else 0.0)) / 1e6 / traced
    busy = {}
    for e in thunks:
        busy[group(e["name"])] = busy.get(group(e["name"]), 0.0) + e["dur"]
    total = sum(busy.values()) or 1.0
    split = {"convolutions (outside the thunks)": max(wall - covered, 0.0)}
    split.update({k: covered * v / total for k, v in sorted(busy.items(), key=lambda kv: -kv[1])})
    return {k: v * 1e3 for k, v in split.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default=str(HERE / "results" / "step-profile.md"))
    ap.add_argument("--engines", default="keras,tf,torch,keras-jax,keras-torch")
    ap.add_argument("--model", help="the zoo model to profile (default: the recipe's, or seed-cnn)")
    ap.add_argument("--recipe", help="a named recipe under the model and --set (speedrun-muon: its network and optimizer)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config keys for every engine")
    ap.add_argument("--versus", action="append", default=[], metavar="KEY=VALUE",
                    help="also profile each engine (or those --versus-engines names) with this setting "
                         "(env:NAME=VALUE: this environment variable), "
                         "in the same run (one row each)")
    ap.add_argument("--versus-engines", help="the engines --versus profiles again (default: every engine)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        from clsf.config import build_config

        args.model = build_config(recipe=args.recipe).model.name if args.recipe else "seed-cnn"
    MODEL.update(name=args.model, set=args.set, recipe=args.recipe)
    if args.worker:
        import numpy as np

        job = json.loads(args.worker)
        with np.load(job["arrays"]) as z:
            x, y = z["x"], z["y"]
        if job["engine"] == "torch":
            out = profile_torch(x, y, args.batch, args.steps)
        elif job["engine"] in ("keras-jax", "keras-torch"):
            out = profile_keras_backend(job["engine"], x, y, args.batch, args.steps)
        else:
            out = profile_tf(job["engine"], x, y, args.batch, args.steps)
        print(json.dumps(out))
        return 0
    if not args.data:
        ap.error("--data is required")
    engines = args.engines.split(",")
    versus_engines = args.versus_engines.split(",") if args.versus_engines else engines
    if not set(versus_engines) <= set(engines):
        ap.error(f"--versus-engines names engines --engines does not: {sorted(set(versus_engines) - set(engines))}")
    import numpy as np

    from clsf.data import load_dataset
    from clsf.config import build_config
    from clsf.models.spec import forward_flops
    from clsf.run.setup import build_spec

    ds = load_dataset(args.data)
    results, row_sets = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        arrays = Path(tmp) / "a.npz"
        n = args.batch * args.steps
        np.savez(arrays, x=ds["train"].x[:n], y=ds["train"].y[:n])
        for engine in engines:
            for versus in [None, *(args.versus if engine in versus_engines else [])]:  # the engine, then each variant
                label = f"{engine} {versus}" if versus else engine
                print(f"profiling {label}", flush=True)
                env = dict([versus[4:].split("=", 1)]) if versus and versus.startswith("env:") else {}
                sets = row_sets[label] = [*args.set, *([versus] if versus and not env else [])]
                r = subprocess.run([sys.executable, __file__, "--batch", str(args.batch), "--steps", str(args.steps),
                                    "--model", args.model, *(["--recipe", args.recipe] if args.recipe else []),
                                    *(f"--set={kv}" for kv in sets), "--worker",
                                    json.dumps({"engine": engine, "arrays": str(arrays)})], capture_output=True, text=True,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
                if r.returncode:
                    raise SystemExit(r.stderr[-3000:])
                results[label] = json.loads(r.stdout.strip().splitlines()[-1])
    # this machine's ceiling, measured in this run by bench/speed.py's own worker
    ceiling = subprocess.run([sys.executable, str(HERE / "speed.py"), "--worker", '{"kind": "sgemm"}'], capture_output=True,
                             text=True, check=True).stdout
    sgemm = json.loads(ceiling.strip().splitlines()[-1])["gflops"]

    def step_flops(sets):  # each row's own network: a --versus of model.args (widths) changes its FLOPs
        cfg = build_config(flags={}, overrides=[f"model.name={args.model}", *sets], recipe=args.recipe)
        return 3 * forward_flops(build_spec(cfg, ds["train"].x.shape[1:], 10)) * args.batch
    settings = (f", --recipe {args.recipe}" if args.recipe else "") + (f", {' '.join(args.set)}" if args.set else "")
    lines = [f"# Where a {args.model} training step goes (batch {args.batch}{settings}, {time.strftime('%Y-%m-%d')})", "",
             f"Milliseconds per step, median of 5 passes over {args.steps} steps, each engine in its own process; "
             "parts by ablation (see bench/step_profile.py). `keras` here times the same Keras model and optimizer as `tf` "
             "(fit's loop is the `epoch` row).", "",
             f"CPU: {cpu_model()} ({os.cpu_count()} cores). The machine's sgemm rate (float32), measured in this run: "
             f"{sgemm:.0f} GFLOP/s.", "",
             "| engine | data | forward | backward | optimizer | loop overhead | whole epoch per step | step GFLOP/s (of sgemm) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for engine, r in results.items():
        p = r["parts"]
        bwd, opt = p["forward+backward"] - p["forward"], p["step"] - p["forward+backward"]
        loop, flops = p["epoch"] - p["step"] - p["data"], step_flops(row_sets[engine])
        lines.append(f"| {engine} | {p['data'] * 1e3:.2f} | {p['forward'] * 1e3:.2f} | {bwd * 1e3:.2f} | {opt * 1e3:.2f} | "
                     f"{loop * 1e3:.2f} | {p['epoch'] * 1e3:.2f} | {flops / p['step'] / 1e9:.0f} ({flops / p['step'] / 1e9 / sgemm:.0%}) |")
    for label in (k for k in results if k.split()[0] == "torch"):
        lines += ["", f"{label}, by operator (share of the step's CPU time, torch.profiler): "
                  + ", ".join(f"{k} {v:.0%}" for k, v in results[label]["ops"].items()) + "."]
    for label in (k for k in results if k.split()[0] == "keras-jax"):
        lines += ["", f"{label}, by XLA's thunks (milliseconds per step over two traced steps, jax.profiler; each "
                  "thunk put to the Keras layer type its HLO metadata names): "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in results[label]["ops"].items()) + "."]
    for versus in args.versus:  # the A/B: each engine's step with the setting against without, in this run
        ratios = [results[e]["parts"]["step"] / results[f"{e} {versus}"]["parts"]["step"] for e in versus_engines]
        lines += ["", f"With {versus}, the step runs " + ", ".join(f"{r:.2f}x" for r in ratios)
                  + f" as fast ({', '.join(versus_engines)})."]
    lines += ["", "keras-jax and keras-torch: forward and forward+backward through the backend (jax.jit of "
              "`stateless_call` and `jax.grad`; torch autograd), the step is Keras' own `train_step` as fit runs it "
              "(on JAX jitted over the state arrays, on torch eager), the epoch is the engine's `fit`."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
