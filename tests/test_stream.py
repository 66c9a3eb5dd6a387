"""Streaming image folders (data.stream): the same batches, crops, flips and results as the
in-memory path, read from disk by DataLoader workers (torch) or tf.data (tf)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clsf import build_config, train
from clsf.data import load_dataset
from clsf.data.stream import Files
from clsf.errors import UserError


def make_folder(root, n_train=24, n_test=8, size=(12, 12), seed=0):
    """Three classes of PNG and JPEG images (the JPEGs decode alike in PIL and TF's accurate DCT)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, cls in enumerate(("ant", "bee", "cat")):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.clip(rng.normal(60 + 70 * k, 40, (*size, 3)), 0, 255).astype(np.uint8)
                fmt = "JPEG" if i % 3 == 0 else "PNG"
                Image.fromarray(a).save(root / split / cls / f"{i:03d}.{fmt.lower().replace('jpeg', 'jpg')}", fmt)
    return root


def _run(tmp_path, data, engine, stream, name):
    cfg = build_config(flags={"engine": engine, "epochs": 2, "batch_size": 8, "runs_dir": str(tmp_path), "run_name": name},
                       overrides=[f"data.name={data}", f"data.stream={stream}", "data.crop_padding=2", "data.hflip=true",
                                  "data.scale=standardize", "data.workers=2", "model.name=seed-cnn"])
    run = train(cfg, quiet=True)
    with np.load(run / "checkpoints" / "last" / "weights.npz") as z:
        return {k: z[k] for k in z.files}, json.loads((run / "final.json").read_text())


def test_a_streamed_folder_is_files_with_the_in_memory_labels_and_pixels(tmp_path):
    root = make_folder(tmp_path / "imgs")
    mem = load_dataset(str(root))
    st = load_dataset(str(root), stream=True)
    assert isinstance(st["train"].x, Files) and st.class_names == mem.class_names
    assert st["train"].x.shape == mem["train"].x.shape
    np.testing.assert_array_equal(st["train"].y, mem["train"].y)
    np.testing.assert_array_equal(st["train"].x.load(), mem["train"].x)


@pytest.mark.parametrize("engine", [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)])
def test_streaming_trains_exactly_as_in_memory(tmp_path, engine):
    data = make_folder(tmp_path / "imgs")
    w_mem, f_mem = _run(tmp_path, data, engine, "false", "mem")
    w_st, f_st = _run(tmp_path, data, engine, "true", "st")
    assert max(float(np.abs(w_mem[k] - w_st[k]).max()) for k in w_mem) <= 1e-6
    assert f_mem["test_acc"] == f_st["test_acc"] and abs(f_mem["test_loss"] - f_st["test_loss"]) < 1e-6


@pytest.mark.torch
def test_the_stream_comparison_catches_batches_out_of_order(tmp_path, monkeypatch):
    from clsf.data import torch_pipeline

    data = make_folder(tmp_path / "imgs")
    w_mem, _ = _run(tmp_path, data, "torch", "false", "mem")
    # a loader that hands back each batch's images one position off (the labels stay right)
    monkeypatch.setattr(torch_pipeline.FileImages, "__getitem__", lambda self, i: self.files.read((i + 1) % len(self.files)))
    w_bad, _ = _run(tmp_path, data, "torch", "true", "bad")
    assert max(float(np.abs(w_mem[k] - w_bad[k]).max()) for k in w_mem) > 1e-3


def test_auto_streams_a_folder_above_the_threshold(tmp_path, monkeypatch, capsys):
    from clsf.data import stream

    root = make_folder(tmp_path / "imgs")
    assert not isinstance(load_dataset(str(root), stream=None)["train"].x, Files)  # small: in memory
    monkeypatch.setattr(stream, "STREAM_ABOVE_MB", 0.01)
    assert isinstance(load_dataset(str(root), stream=None)["train"].x, Files)
    assert "streaming them from disk" in capsys.readouterr().out


def _clsf(*args):
    return subprocess.run([sys.executable, "-m", "clsf", "train", "--engine", "torch", "--epochs", "1", "--quiet", *args],
                          capture_output=True, text=True)


@pytest.mark.torch
def test_streaming_bad_input_is_one_line_and_exit_2(tmp_path):
    root = make_folder(tmp_path / "imgs")
    Image.fromarray(np.zeros((20, 12, 3), np.uint8)).save(root / "train" / "ant" / "zz-odd.png")
    r = _clsf("--data", str(root), "--runs-dir", str(tmp_path / "runs"), "data.stream=true")
    assert r.returncode == 2 and "20x12" in r.stderr and "resize the folder" in r.stderr and "Traceback" not in r.stderr
    (root / "train" / "ant" / "zz-odd.png").write_bytes(b"not an image")
    r = _clsf("--data", str(root), "--runs-dir", str(tmp_path / "runs"), "data.stream=true")
    assert r.returncode == 2 and "zz-odd.png" in r.stderr and "Traceback" not in r.stderr
    r = _clsf("--data", "synthetic", "--runs-dir", str(tmp_path / "runs"), "data.stream=true")
    assert r.returncode == 2 and "streams image folders" in r.stderr
    r = _clsf("--data", str(root), "--runs-dir", str(tmp_path / "runs"), "data.stream=true", "data.image_size=[8, 8]")
    assert r.returncode == 2 and "data.image_size" in r.stderr


def test_skip_bad_when_streaming_leaves_out_bad_and_odd_sized_files_before_training(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs", n_train=4, n_test=2)
    (root / "train" / "ant" / "zz-broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.fromarray(np.zeros((20, 12, 3), np.uint8)).save(root / "train" / "bee" / "zz-odd.png")
    with pytest.raises(UserError, match="zz-broken.jpg|zz-odd.png"):
        load_dataset(str(root), stream=True).__getitem__("train").x.load()
    ds = load_dataset(str(root), stream=True, skip_bad=True)
    assert len(ds["train"]) == 12 and len(ds["test"]) == 6 and ds.notes["skipped_bad_images"] == 2
    assert ds["train"].x.load().shape == (12, 12, 12, 3)  # every file left decodes, at one size
    err = capsys.readouterr().err
    assert "zz-broken.jpg" in err and "zz-odd.png" in err and "20x12" in err
