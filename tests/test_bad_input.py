"""One matrix of bad input across the command line: flags, config files, data sources, run
directories, checkpoints, images to predict, exports and reports. Every case: one line naming the
problem and the fix, the documented exit code, no traceback, and no existing file changed."""

import os
import pickle
import shutil
import tarfile
import zipfile

import numpy as np
import pytest

from clsf.cli import main
from helpers import make_cifar_folder, make_image_tree, png_bytes

DATA = "synthetic:train=60,test=20,size=10x10x3,classes=3"
TINY = ["model.args.widths=[4, 4]", "model.args.dense=8"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished torch run, copied into each case that needs one."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("base")
    assert main(["train", "--engine", "torch", "--data", DATA, "--epochs", "1", "--runs-dir", str(root),
                 "--run-name", "run", "--quiet", *TINY]) == 0
    return root / "run"


class _Exploit:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def _images(d, n=2, size=(10, 10), mode_shape=(3,)):
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"{i}.png").write_bytes(png_bytes(np.full((*size, *mode_shape), 90 + i, np.uint8).squeeze()))
    return d


# --- setups: each gets the case folder (the cwd) and the finished run's copy, returns nothing -----
def folder_one_class(t, run):
    _images(t / "d" / "train" / "cat")


def folder_corrupt_image(t, run):
    make_image_tree(t / "d")
    (t / "d" / "train" / "cat" / "bad.png").write_bytes(b"\x89PNG not really")


def folder_pil_bomb(t, run):
    """A PNG whose header declares 30000 x 30000 pixels (the bytes of a 10 x 10 one)."""
    import struct
    import zlib

    make_image_tree(t / "d")
    raw = bytearray(png_bytes(np.zeros((10, 10, 3), np.uint8)))
    raw[16:24] = struct.pack(">II", 30000, 30000)  # IHDR width, height
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))  # and its CRC
    (t / "d" / "train" / "cat" / "bomb.png").write_bytes(bytes(raw))


def zip_bomb(t, run):
    """A small zip whose directory declares a 4 GiB member."""
    import zipfile

    with zipfile.ZipFile(t / "d.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("d/train/cat/0.png", b"\0" * 1000)
    raw = bytearray((t / "d.zip").read_bytes())
    at = raw.index(b"PK\x01\x02")  # the central directory entry: uncompressed size at +24
    raw[at + 24:at + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    (t / "d.zip").write_bytes(bytes(raw))


def yaml_alias_bomb(t, run):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (t / "c.yaml").write_text("\n".join(lines) + "\n")


def yaml_deep(t, run):
    (t / "c.yaml").write_text("a: " + "[" * 2000 + "]" * 2000 + "\n")


def folder_empty_image(t, run):
    make_image_tree(t / "d")
    (t / "d" / "train" / "dog" / "empty.png").write_bytes(b"")


def folder_mixed_sizes(t, run):
    make_image_tree(t / "d", size=(8, 8))
    _images(t / "d" / "train" / "cat", 1, size=(9, 7))


def zip_escape(t, run):
    ok = png_bytes(np.zeros((4, 4, 3), np.uint8))
    with zipfile.ZipFile(t / "d.zip", "w") as zf:
        for n in ("a/0.png", "b/0.png", "../evil/0.png"):
            zf.writestr(n, ok)


def tar_link(t, run):
    with tarfile.open(t / "d.tar", "w") as tf:
        info = tarfile.TarInfo("a/link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)


def crafted_cifar(t, run):
    make_cifar_folder(t / "cifar-10-batches-py")
    (t / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(_Exploit(), protocol=2))


def npz_labels_out_of_range(t, run):
    np.savez(t / "d.npz", x_train=np.zeros((4, 8, 8, 3), np.uint8), y_train=np.array([0, 1, 2, 99]))


def npz_no_training_images(t, run):
    np.savez(t / "d.npz", x_train=np.zeros((0, 8, 8, 3), np.uint8), y_train=np.zeros(0, np.int64),
             x_test=np.zeros((2, 8, 8, 3), np.uint8), y_test=np.array([0, 1]))


def npz_count_mismatch(t, run):
    np.savez(t / "d.npz", x_train=np.zeros((4, 8, 8, 3), np.uint8), y_train=np.array([0, 1, 1]))


def truncated_idx(t, run):
    import gzip

    (t / "mnist").mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        with gzip.open(t / "mnist" / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03\x00\x00")  # the magic number, then the dimensions cut off


def empty_folder(t, run):
    (t / "d").mkdir()


def writes(name: str, text: str):
    """A setup that writes one file into the case folder."""
    def setup(t, run):
        (t / name).write_text(text)
    setup.__name__ = f"file_{name.replace('.', '_')}"
    return setup


config_bad_yaml = writes("c.yaml", "optim: [unclosed\n")
config_list = writes("c.yaml", "- 1\n- 2\n")
config_python_tag = writes("c.yaml", "epochs: !!python/object/apply:os.system [touch pwned]\n")
model_file_bad_layer = writes("m.yaml", "layers: [{type: konv, filters: 4}]\n")
runs_dir_is_a_file = writes("runs", "not a folder")
run_is_a_file = writes("afile", "x")
empty_image = writes("e.png", "")
existing_file = writes("f", "mine")


def folder_of_empty_images(t, run):
    (t / "e").mkdir()
    for i in range(2):
        (t / "e" / f"{i}.png").write_bytes(b"")


def folder_without_test_images(t, run):
    make_image_tree(t / "d", splits=("train",))
    (t / "d" / "test").mkdir()


def export_with_damaged_clsf_json(t, run):
    (t / "x").mkdir()
    (t / "x" / "clsf.json").write_text("{not json")
    (t / "i.png").write_bytes(png_bytes(np.zeros((10, 10, 3), np.uint8)))


def compare_with_damaged_plan(t, run):
    (t / "c").mkdir()
    (t / "c" / "plan.json").write_text("[1, 2")


def truncated_weights(t, run):
    w = run / "checkpoints" / "last" / "weights.npz"
    w.write_bytes(w.read_bytes()[:100])


def no_checkpoint(t, run):
    shutil.rmtree(run / "checkpoints" / "best")


def crafted_state(t, run):
    (run / "checkpoints" / "last" / "state.pt").write_bytes(pickle.dumps({"model": _Exploit()}))
    (run / "final.json").unlink()  # so resume wants the training state


def other_model_run(t, run):
    assert main(["train", "--engine", "torch", "--data", DATA, "--epochs", "1", "--runs-dir", str(t), "--run-name",
                 "wide", "--quiet", "model.args.widths=[6, 6]", "model.args.dense=8"]) == 0


def other_classes_run(t, run):
    assert main(["train", "--engine", "torch", "--data", "synthetic:train=60,test=20,size=10x10x3,classes=4", "--epochs",
                 "1", "--runs-dir", str(t), "--run-name", "four", "--quiet", *TINY]) == 0


def no_images(t, run):
    (t / "docs").mkdir()
    (t / "docs" / "a.txt").write_text("x")


def export_taken(t, run):
    (t / "taken").mkdir()
    (t / "taken" / "mine.txt").write_text("mine")


def nothing(t, run):
    pass


def npz_memory_bomb(t, run):
    """A small .npz whose x_train.npy header declares 2 TiB (nothing near that follows it)."""
    import io

    with zipfile.ZipFile(t / "d.npz", "w", zipfile.ZIP_DEFLATED) as z:
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (2**31, 32, 32, 1)})
        z.writestr("x_train.npy", head.getvalue() + bytes(4096))
        buf = io.BytesIO()
        np.save(buf, np.zeros(4, np.int64))
        z.writestr("y_train.npy", buf.getvalue())


def predictions_without_logits(t, run):
    np.savez(run / "predictions.npz", labels=np.zeros(20, np.int64))


def last_checkpoint_a_link(t, run):
    outside = t / "elsewhere"
    shutil.move(str(run / "checkpoints" / "last"), outside)
    (run / "checkpoints" / "last").symlink_to(outside)


def weights_of_another_layout(t, run):
    np.savez(run / "checkpoints" / "last" / "weights.npz", **{"conv1/kernel": np.zeros((3, 3, 3, 4), np.float32)})


def class_folder_not_utf8(t, run):
    make_image_tree(t / "d")
    os.rename(os.fsencode(t / "d" / "train" / "cat"), os.fsencode(t / "d" / "train") + b"/c\xffat")


def space_file(t, run):
    (t / "s.yaml").write_text("space:\n  batch_size: [16, 32]\n")


def space_bad_point(t, run):
    (t / "s.yaml").write_text("space:\n  batch_size: [16, 0]\n")


T = "train --engine torch --data " + DATA + " --runs-dir runs --epochs 1"
CASES = [
    # command line flags and config values
    (T + " optim.lrr=0.1", nothing, 2, "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    ("train --engine keras --device cuda --data " + DATA + " --runs-dir runs --epochs 1", nothing, 2,
     "device 'cuda' asks for a GPU, and the keras engine finds none here"),
    ("train --engine tf --device gpu:0 --data " + DATA + " --runs-dir runs --epochs 1", nothing, 2,
     "device 'gpu:0' asks for a GPU, and the tf engine finds none here"),
    (T + " optim.class_weight=sometimes", nothing, 2, "optim.class_weight='sometimes' is not known; use balanced"),
    (T + " optim.unfreeze_lr=0.001", nothing, 2, "optim.unfreeze_lr is the rate once the trunk unfreezes"),
    (T + " epochs=many", nothing, 2, "config key 'epochs' expects int"),
    (T + " optim.schedule=sawtooth", nothing, 2, "optim.schedule 'sawtooth' is not known"),
    (T + " --batch-size 0", nothing, 2, "batch_size=0 must be at least 1"),
    (T + " --lr -1", nothing, 2, "optim.lr=-1.0 must be a finite number > 0"),
    (T + " --lr inf", nothing, 2, "optim.lr=inf must be a finite number > 0"),
    (T + " --seed -1", nothing, 2, "seed=-1 must be in [0, 2**32)"),
    (T + " --seed 99999999999999999999", nothing, 2, "must be in [0, 2**32)"),
    (T + " --run-name ../x", nothing, 2, "must be a plain folder name"),
    (T + " --epochs 1000000000", nothing, 2, "epochs=1000000000 must be in [1, 100,000]"),
    (T + " data.crop_padding=1000000", nothing, 2, "data.crop_padding=1000000 must be at most 256 pixels"),
    (T + " --nproc 64", nothing, 2, "--nproc 64 is more processes than this machine's"),
    (T + " model.args.widths=[100000,100000]", nothing, 2, "GiB to train at batch 32"),
    (T + " data.mixup=-1", nothing, 2, "data.mixup=-1.0 must be in [0, 100] (a Beta concentration, e.g. 0.2"),
    (T + " data.cutout=-4", nothing, 2, "data.cutout=-4 must be in [0, 1024] (the side of the erased square"),
    (T + " optim.ema=1", nothing, 2, "optim.ema=1.0 must be in [0, 1) (a decay per update"),
    (T + " optim.ema_every=0", nothing, 2, "optim.ema_every=0 must be >= 1"),
    (T + " optim.lookahead=true", nothing, 2, "optim.lookahead and optim.ema_power shape the weight average; give optim.ema"),
    (T + " optim.muon_lr=-1", nothing, 2, "optim.muon_lr=-1.0 must be a finite number >= 0 (0 turns Muon off)"),
    (T + " model.name=mobilenet-v2 optim.muon_lr=0.1", nothing, 2, "optim.muon_lr steps plain convolution kernels, and model"),
    (T + " model.name=airbench model.args.bias_scale=0", nothing, 2, "bias_scale 0.0 must be a positive number"),
    (T + " model.whiten_init=true", nothing, 2, "has 32 filters; whitening 3x3x3 patches needs 27 or 54"),
    (T.replace("torch", "tf") + " deterministic=true tf.mode=xla", nothing, 2,
     "deterministic=true with tf.mode=xla: TensorFlow has no deterministic XLA gradient for max pooling (pool1)"),
    ("train --image-size 100000x100000", nothing, 2, "is larger than 4096 pixels a side"),
    (T + " --config c.yaml", yaml_alias_bomb, 2, "expands to more than 100,000 values"),
    (T + " --config c.yaml", yaml_deep, 2, "nests too deeply to read"),
    ("data info --data d", folder_pil_bomb, 2, "(a decompression bomb?)"),
    ("data info --data d.zip", zip_bomb, 2, "declares 4.0 GiB, more than one entry may hold"),
    ("gan --data " + DATA + " gan.label_noise=5", nothing, 2, "gan.label_noise=5.0 must be in [0, 0.5]"),
    ("gan --data " + DATA + " --latent 0", nothing, 2, "gan.latent=0 must be in [1, 4096]"),
    ("gan --data " + DATA + " gan.sample_every=0", nothing, 2, "gan.sample_every=0 must be at least 1"),
    ("gan --data " + DATA + " gan.d_lr=-1", nothing, 2, "gan.d_lr and gan.g_lr must be finite numbers > 0"),
    (T + " optim.label_smoothing=1.5", nothing, 2, "optim.label_smoothing=1.5 must be in [0, 1)"),
    (T + " data.val_split=1.5", nothing, 2, "data.val_split=1.5 must be in [0, 1)"),
    (T + " optim=5", nothing, 2, "config key 'optim' is a section"),
    (T + " notakey", nothing, 2, "override 'notakey' is not KEY=VALUE"),
    ("train --engine jax", nothing, 2, "argument --engine: invalid choice: 'jax'"),
    ("train --image-size 3", nothing, 2, "'3' is not a size; use HxW"),
    ("train --channels 2", nothing, 2, "argument --channels: invalid choice"),
    ("trian", nothing, 2, "invalid choice: 'trian'"),
    ("compare --engines keras,jax --runs-dir runs", nothing, 2, "names jax"),
    ("sweep --grid batch_size --runs-dir runs", nothing, 2, "is not KEY=V1,V2"),
    ("tune --space missing.yaml --data " + DATA + " --runs-dir runs", nothing, 2, "'missing.yaml' does not exist"),
    ("tune --space s.yaml --workers 0 --data " + DATA + " --runs-dir runs", space_file, 2, "at least 1"),
    ("tune --space s.yaml --trials 1000000000 --data " + DATA + " --runs-dir runs", space_file, 2,
     "--trials 1000000000 must be in [1, 10,000]"),
    (T + " --track mlflow track_uri=::garbage::", nothing, 2, "track_uri '::garbage::' is not a tracking URI"),
    (T + " --run-name r\udcffx", nothing, 2, "run_name 'r\\xffx' is not valid UTF-8 text"),
    (T + " --runs-dir r\udcffx", nothing, 2, "runs_dir 'r\\xffx' is not valid UTF-8 text"),
    ("tune --space s.yaml --data " + DATA + " --runs-dir runs", space_bad_point, 2, "search space point {'batch_size': 0}"),
    ("tune --space s.yaml --storage nosuch://db --data " + DATA + " --runs-dir runs", space_file, 2, "cannot be opened"),
    ("tune --space s.yaml --data " + DATA + " --runs-dir runs data.val_split=0", space_file, 2, "needs a validation split"),
    # config and model files
    (T + " --config missing.yaml", nothing, 2, "config file 'missing.yaml' does not exist"),
    (T + " --config /dev/null", nothing, 2, "config file '/dev/null' is not a regular file"),
    ("predict {run} /dev/zero", nothing, 2, "'/dev/zero' is not a regular file or folder"),
    (T + " --config c.yaml", config_bad_yaml, 2, "is not valid YAML"),
    (T + " --config c.yaml", config_list, 2, "must hold a mapping"),
    (T + " --config c.yaml", config_python_tag, 2, "holds a tag clsf will not construct"),
    (T + " --model vgg99", nothing, 2, "unknown model 'vgg99'"),
    (T + " --model gan-generator", nothing, 2, "is a GAN generator, not a classifier"),
    (T + " model.args.colour=red", nothing, 2, "has no option colour"),
    (T + " --model m.yaml", model_file_bad_layer, 2, "unknown layer type 'konv'; did you mean 'conv'?"),
    # data sources
    ("data info --data nowhere/at/all", nothing, 2, "does not exist"),
    ("data info --data synthetic:train=-5", nothing, 2, "bad synthetic option 'train=-5'"),
    ("data info --data d", empty_folder, 2, "no images"),
    ("data info --data d", folder_one_class, 2, "found a single class folder"),
    ("data info --data d", folder_corrupt_image, 2, "cannot decode image 'train/cat/bad.png' (not a PNG, JPEG or BMP image)"),
    ("data info --data d", folder_empty_image, 2, "cannot decode image 'train/dog/empty.png'"),
    ("data info --data d", folder_mixed_sizes, 2, "pass --image-size HxW"),
    ("data info --data d.zip", zip_escape, 2, "outside the archive"),
    ("data info --data d.tar", tar_link, 2, "is a link"),
    ("data info --data cifar-10-batches-py", crafted_cifar, 2, "refusing to load this pickle"),
    ("data info --data d.npz", npz_labels_out_of_range, 2, "renumber the labels to 0..K-1"),
    ("data info --data d.npz", npz_count_mismatch, 2, "4 images but 3 labels"),
    ("train --data d.npz --epochs 1", npz_no_training_images, 2, "has no training images; add a train/ folder"),
    ("data info --data mnist --data-dir .", truncated_idx, 2, "IDX header is truncated"),
    ("data info --data d.npz", npz_memory_bomb, 2, "its arrays unpack to 2,048.0 GiB (x_train alone"),
    ("data info --data d", class_folder_not_utf8, 2, "the class folder name 'c\\xffat' is not valid UTF-8 text"),
    # run directories and checkpoints
    ("evaluate .", nothing, 2, "is not a clsf run directory"),
    ("evaluate afile", run_is_a_file, 2, "is not a clsf run directory"),
    ("evaluate {run} --checkpoint best", no_checkpoint, 2, "has no checkpoints/best"),
    ("evaluate {run}", truncated_weights, 2, "weights.npz is damaged (File is not a zip file)"),
    ("train --resume {run} --batch-size 64", nothing, 2, "--batch-size cannot change when resuming"),
    ("train --resume {run} --config c.yaml", nothing, 2, "--config cannot be combined with --resume"),
    ("train --resume {run} --epochs 2", crafted_state, 2, "holds more than tensors and was not loaded"),
    ("evaluate {run}", predictions_without_logits, 2, "predictions.npz is damaged (it lacks logits)"),
    ("train --resume {run} --epochs 2", last_checkpoint_a_link, 2, "checkpoints/last is a symbolic link"),
    ("evaluate {run}", last_checkpoint_a_link, 2, "checkpoints/last is a symbolic link"),
    ("train --resume {run} --epochs 2", weights_of_another_layout, 2, "weights.npz is damaged (it lacks conv1/bias)"),
    ("train --resume {run}", nothing, 0, "is finished (1 epoch,"),
    (T + " --runs-dir runs/sub", runs_dir_is_a_file, 2, "cannot create run directory"),
    (T + " --runs-dir /proc/self/clsf-runs", nothing, 2, "cannot create run directory"),  # read-only, even for root
    (T + " model.args.widths=[4,4] model.args.dense=8 init_from=wide", other_model_run, 2, "do not fit model 'seed-cnn'"),
    (T + " model.args.widths=[4,4] model.args.dense=8 init_from=four", other_classes_run, 2, "do not fit model 'seed-cnn'"),
    # images to predict, exports, reports
    ("predict {run} missing.png", nothing, 2, "'missing.png' does not exist"),
    ("predict {run} x.png --batch-size -5", nothing, 2, "--batch-size -5 must be at least 1"),
    ("predict x i.png", export_with_damaged_clsf_json, 2, "clsf.json is damaged (JSONDecodeError)"),
    ("train --engine torch --data d --runs-dir runs --epochs 1 data.test_split=0", folder_without_test_images, 2,
     "has no test images to report on; add a test/ folder of the same classes (or a test split to the file), or hold some out"),
    ("evaluate {run} --data synthetic:train=30,test=20,size=9x9x3,classes=4", nothing, 2,
     "has classes class0, class1, class2, class3 but the run was trained on class0, class1, class2"),
    ("report {run} --out f", existing_file, 2, "cannot write the report into f"),
    ("data show --data " + DATA + " --out f/x.png", existing_file, 2, "cannot write f/x.png"),
    ("models summary seed-cnn --framework torch --diagram f/d.png", existing_file, 2, "cannot write f/d.png"),
    ("export {run} --format onnx --out f", existing_file, 2, "f exists and is not empty"),
    ("compare --engines torch --data " + DATA + " --out c", compare_with_damaged_plan, 2, "plan.json is damaged"),
    ("predict {run} x.png --top-k 0", nothing, 2, "--top-k 0 must be at least 1"),
    ("predict {run} e.png", empty_image, 2, "cannot read image 'e.png' (not a PNG, JPEG or BMP image)"),
    ("predict {run} docs", no_images, 2, "'docs' holds no images"),
    ("predict {run} 'nothing*.png'", nothing, 2, "'nothing*.png' matches no files; check the pattern"),
    ("export {run} --format onnx --out taken", export_taken, 2, "taken exists and is not empty"),
    ("export . --format keras", nothing, 2, "is not a clsf run directory"),
    ("report no/such/run", nothing, 2, "'no/such/run' does not exist"),
    ("report docs", no_images, 2, "holds no clsf run directories"),
]


def _snapshot(root):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _needs(argv: str) -> list:
    """A row of a command that needs an optional extra skips without it, naming the extra."""
    import importlib.util

    if argv.startswith("tune"):
        return [pytest.mark.extra] + ([pytest.mark.skip(reason="clsf tune needs the tune extra: pip install -e '.[tune]'")]
                                      if importlib.util.find_spec("optuna") is None else [])
    return []


@pytest.mark.torch
@pytest.mark.parametrize("argv,setup,code,message", [pytest.param(*c, marks=_needs(c[0])) for c in CASES],
                         ids=[f"{i:02d}-{c[1].__name__}" for i, c in enumerate(CASES)])
def test_bad_input(argv, setup, code, message, finished, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    setup(tmp_path, run)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    args = [a.strip("'") for a in argv.format(run=run).split()]
    try:
        got = main(args)
    except SystemExit as e:  # argparse's own exit, with clsf's one-line message
        got = e.code
    out, err = capsys.readouterr()
    if code == 0:
        assert got == 0 and message in out, out + err
    else:
        assert got == code, err
        assert err.strip().count("\n") == 0 and message in err and "Traceback" not in err, err
        assert err.startswith("clsf: error: ")
    assert _snapshot(tmp_path) == before  # nothing existing changed, nothing new written
    assert not (tmp_path / "pwned").exists()


def test_the_matrix_is_big_enough():
    assert len(CASES) >= 40 and len({c[0].split()[0] for c in CASES}) >= 7


@pytest.mark.torch
def test_skip_bad_that_skips_every_file_is_an_error(finished, tmp_path, capsys):
    folder_of_empty_images(tmp_path, None)
    assert main(["predict", str(finished), str(tmp_path / "e"), "--skip-bad"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("clsf: skipped") for line in err[:2])
    assert err[-1].startswith("clsf: error: none of the 2 files could be read as an image")
