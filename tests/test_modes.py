"""Eager vs graph vs XLA (tf.mode) and torch.compile: the same training, measured; the tracing
report (traces and graph size per tf.function) and the seeds' input-signature lesson."""

import json

import numpy as np
import pytest

from clsf.run import rundir
from clsf.run.train import train
from helpers import long, tiny_config

DATA = "synthetic:train=150,test=30,size=10x10x3,classes=3"
TINY = ["model.args.widths=[4, 4]", "model.args.dense=8", "model.args.dropout=0"]


def _run(tmp_path, engine, name, *overrides):
    run = train(tiny_config(engine, tmp_path, DATA, *overrides, small=TINY, batch_size=16, run_name=name), quiet=True)
    return run, [r["train_loss"] for r in rundir.read_metrics(run)]


@pytest.mark.tf
@pytest.mark.parametrize("engine", long(["tf", "keras"], "keras"))
def test_eager_graph_and_xla_train_the_same_model(tmp_path, engine):
    graph_run, graph = _run(tmp_path, engine, "graph")
    eager_run, eager = _run(tmp_path, engine, "eager", "tf.mode=eager")
    _, xla = _run(tmp_path, engine, "xla", "tf.mode=xla")
    assert eager == pytest.approx(graph, rel=1e-5)  # the same ops, run one by one or as a graph
    assert xla == pytest.approx(graph, rel=1e-2)  # XLA fuses kernels: other rounding, the same training
    tracing = json.loads((graph_run / "env.json").read_text())["tracing"]
    assert tracing["predict_step"]["traces"] == 1 and tracing["predict_step"]["graph_nodes"] > 10
    if engine == "tf":  # its step has one signature, so its graph can be measured
        assert tracing["train_step"] == {"traces": 1, "graph_nodes": tracing["train_step"]["graph_nodes"]}
        assert tracing["train_step"]["graph_nodes"] > tracing["predict_step"]["graph_nodes"]
    assert json.loads((eager_run / "env.json").read_text())["tracing"]["train_step"]["traces"] == 0
    assert "traced functions:" in (graph_run / "summary.txt").read_text()


@pytest.mark.torch
@pytest.mark.slow  # inductor compiles C++ for a minute on 2 cores
def test_torch_compile_trains_the_same_model(tmp_path):
    _, plain = _run(tmp_path, "torch", "plain")
    _, compiled = _run(tmp_path, "torch", "compiled", "torch.compile=true")
    assert compiled == pytest.approx(plain, rel=1e-4)


@pytest.mark.tf
def test_the_input_signature_lesson():
    """The seeds' tracing lesson: without an input signature a new batch size traces a new graph;
    with a free batch dimension (what clsf's steps declare) one graph serves every batch size."""
    import tensorflow as tf

    count = {"plain": 0, "signed": 0}

    def step(name):
        def f(x):
            count[name] += 1  # a Python side effect: runs once per tracing
            return tf.reduce_sum(x * 2.0)
        return f

    plain = tf.function(step("plain"))
    signed = tf.function(step("signed"), input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    for n in (32, 32, 7, 32, 5):  # full batches, and short last batches
        x = np.ones((n, 4), np.float32)
        assert float(plain(x)) == float(signed(x)) == 8.0 * n
    assert count == {"plain": 3, "signed": 1}
