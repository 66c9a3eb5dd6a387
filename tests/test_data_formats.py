"""Loaders for each canonical format, on tiny files written here, round-tripped against known arrays."""

import gzip
import pickle

import numpy as np
import pytest

from clsf.data import load_dataset, prepare
from clsf.data.cifar import load_cifar10
from clsf.data.folder import load_image_folder, mixed_order
from clsf.errors import UserError
from helpers import SHARED, make_cifar_folder, make_image_tree, png_bytes, tar_dir, zip_dir


def _concat(arrays, names):
    return np.concatenate([arrays[n][0] for n in names]), np.concatenate([arrays[n][1] for n in names])


def test_cifar_folder_round_trip(tmp_path):
    arrays = make_cifar_folder(tmp_path / "cifar-10-batches-py")
    ds = load_cifar10(tmp_path)
    x, y = _concat(arrays, [f"data_batch_{i}" for i in range(1, 6)])
    np.testing.assert_array_equal(ds["train"].x, x)
    np.testing.assert_array_equal(ds["train"].y, y)
    np.testing.assert_array_equal(ds["test"].x, arrays["test_batch"][0])
    assert ds["train"].x.dtype == np.uint8 and ds["train"].y.dtype == np.int64
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10 and len(ds.checksum) == 64


@pytest.mark.parametrize("meta", [7, {b"label_names": 3}, {b"label_names": b"cat"}, {"other": []}, [1, 2]])
def test_cifar_meta_without_a_list_of_names_is_one_line(tmp_path, meta):
    make_cifar_folder(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(UserError, match="batches.meta: not a CIFAR meta file.*delete it"):
        load_cifar10(tmp_path)


def test_cifar_tarball_by_path_and_by_name(tmp_path, monkeypatch):
    arrays = make_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
    tarball = tmp_path / "data" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir()
    tar_dir(tmp_path / "src" / "cifar-10-batches-py", tarball)
    by_path = load_dataset(str(tarball))
    monkeypatch.setenv("CLSF_DATA", str(tmp_path / "data"))
    by_name = load_dataset("cifar10")
    np.testing.assert_array_equal(by_path["test"].x, arrays["test_batch"][0])
    np.testing.assert_array_equal(by_name["train"].y, by_path["train"].y)


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))


def test_mnist_idx_gz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "mnist"
    d.mkdir()
    xs = {s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in (("train", 7), ("t10k", 3))}
    ys = {s: rng.integers(0, 10, len(x)).astype(np.uint8) for s, x in xs.items()}
    for s in xs:
        _write_idx(d / f"{s}-images-idx3-ubyte.gz", xs[s])
        _write_idx(d / f"{s}-labels-idx1-ubyte.gz", ys[s])
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds["train"].x.shape == (7, 28, 28, 1)
    np.testing.assert_array_equal(ds["train"].x[..., 0], xs["train"])
    np.testing.assert_array_equal(ds["test"].y, ys["t10k"])
    # the same folder given as a path
    assert load_dataset(str(d))["test"].x.shape == (3, 28, 28, 1)


def test_idx_truncated_is_a_clear_error(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    arr = np.zeros((4, 28, 28), np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + arr.tobytes()[:-10]))
    _write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(UserError, match="truncated"):
        load_dataset(str(d))


def test_npz_round_trip_and_bad_labels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.arange(5), x_test=x[:2], y_test=np.arange(2))
    ds = load_dataset(str(tmp_path / "mnist.npz"))
    np.testing.assert_array_equal(ds["train"].x[..., 0], x)
    np.savez(tmp_path / "bad.npz", x_train=x, y_train=np.array([0, 1, 2, 3, -1]))
    with pytest.raises(UserError, match="labels range over -1"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "mismatch.npz", x_train=x, y_train=np.arange(4))
    with pytest.raises(UserError, match="5 images but 4 labels"):
        load_dataset(str(tmp_path / "mismatch.npz"))


@pytest.mark.parametrize("kind", ["dir", "zip", "tar"])
def test_image_folder_round_trip(tmp_path, kind):
    root = tmp_path / "pets"
    expected = make_image_tree(root, classes=("dog", "cat", "bird"))
    src = {"dir": root, "zip": zip_dir(root, tmp_path / "pets.zip"), "tar": tar_dir(root, tmp_path / "pets.tar.gz")}[kind]
    ds = load_dataset(str(src))
    assert ds.class_names == ["bird", "cat", "dog"]
    for split in ("train", "test"):
        order = mixed_order(len(expected[split][1]), split)
        np.testing.assert_array_equal(ds[split].x, expected[split][0][order])
        np.testing.assert_array_equal(ds[split].y, expected[split][1][order])


@pytest.mark.parametrize("stream", [False, True])
def test_a_folder_loads_class_mixed_so_the_last_fifth_holds_every_class(tmp_path, stream):
    # files are listed sorted, so by class; Keras' validation_split=0.2 takes the last 20% of the arrays,
    # which for class-sorted arrays would be two classes never trained on
    classes = tuple(f"c{i}" for i in range(10))
    make_image_tree(tmp_path / "ten", classes=classes, per_class=20, splits=("train",))
    ds = load_dataset(str(tmp_path / "ten"), stream=stream)
    y = ds["train"].y
    assert sorted(np.bincount(y)) == [20] * 10
    assert set(y[-40:]) == set(range(10)) and set(y[:160]) == set(range(10))
    assert ds.notes["order"].startswith("class-mixed")
    fresh = load_image_folder(tmp_path / "ten", use_cache=False)
    for again in (load_dataset(str(tmp_path / "ten"), stream=stream), fresh):  # from the cache, and decoded anew
        np.testing.assert_array_equal(again["train"].y, y)


def test_image_folder_without_splits_and_cache_follows_content(tmp_path):
    root = tmp_path / "flat"
    make_image_tree(root, splits=(None,))
    first = load_dataset(str(root))
    assert set(first.splits) == {"train"} and len(first["train"]) == 6
    (root / "cat" / "new.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    second = load_dataset(str(root))  # changed content -> re-read, not the stale cache
    assert len(second["train"]) == 7 and second.checksum != first.checksum
    assert load_dataset(str(root)).checksum == second.checksum


def test_grayscale_rgba_and_mixed_sizes(tmp_path):
    root = tmp_path / "mixed"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    (root / "a" / "gray.png").write_bytes(png_bytes(np.full((8, 8), 100, np.uint8)))
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    (root / "b" / "rgba.png").write_bytes(png_bytes(rgba, "RGBA"))
    ds = load_dataset(str(root))  # mixed modes -> RGB
    assert ds.image_shape == (8, 8, 3)
    rgba_at = int(np.flatnonzero(ds["train"].y == 1)[0])  # class b's one image, wherever mixed_order put it
    assert ds["train"].x[rgba_at, 0, 0].tolist() == [200, 0, 0]
    assert load_dataset(str(root), channels=1).image_shape == (8, 8, 1)
    (root / "b" / "big.png").write_bytes(png_bytes(np.zeros((16, 12, 3), np.uint8)))
    with pytest.raises(UserError, match="different sizes.*--image-size"):
        load_dataset(str(root))
    assert load_dataset(str(root), image_size=(10, 10)).image_shape == (10, 10, 3)


def test_all_grayscale_folder_has_one_channel(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "g" / cls).mkdir(parents=True)
        (tmp_path / "g" / cls / "0.png").write_bytes(png_bytes(np.full((6, 6), 7, np.uint8)))
    assert load_dataset(str(tmp_path / "g")).image_shape == (6, 6, 1)


def test_corrupt_image_named_and_skippable(tmp_path):
    root = tmp_path / "c"
    make_image_tree(root, splits=(None,))
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError, match="broken.jpg.*--skip-bad"):
        load_dataset(str(root))
    ds = load_dataset(str(root), skip_bad=True)
    assert len(ds["train"]) == 6 and ds.notes["skipped_bad_images"] == 1


def test_empty_and_single_class_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_dataset(str(tmp_path / "empty"))
    make_image_tree(tmp_path / "one", classes=("only",), splits=(None,))
    with pytest.raises(UserError, match="single class"):
        load_dataset(str(tmp_path / "one"))


def test_unknown_name_and_missing_path():
    with pytest.raises(UserError, match="unknown dataset 'cifar11'"):
        load_dataset("cifar11")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("./no/such/dir")


def test_synthetic_is_seeded_and_options_parse():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    np.testing.assert_array_equal(a["train"].x, b["train"].x)
    c = load_dataset("synthetic:train=40,test=8,size=28x28x1,classes=4,seed=3")
    assert c["train"].x.shape == (40, 28, 28, 1) and c.num_classes == 4
    assert not np.array_equal(load_dataset("synthetic:seed=1")["train"].x, a["train"].x)
    with pytest.raises(UserError, match="bad synthetic option"):
        load_dataset("synthetic:size=3x3x2")


def test_embedded_sample_is_real_cifar():
    ds = load_dataset("cifar10-sample")
    assert (len(ds["train"]), len(ds["test"])) == (2000, 500)
    assert ds.image_shape == (32, 32, 3) and ds.num_classes == 10
    assert np.bincount(ds["train"].y).tolist() == [200] * 10
    assert ds["train"].x.std() > 40  # real photos, not blank


def test_split_is_stratified_seeded_and_disjoint():
    ds = load_dataset("synthetic:train=200,test=20,classes=4")
    p1, p2 = prepare(ds, 0.25, seed=5), prepare(ds, 0.25, seed=5)
    np.testing.assert_array_equal(p1.val.x, p2.val.x)
    assert len(p1.val) == 50
    assert all(abs(c - 12.5) <= 1 for c in np.bincount(p1.val.y))
    train_rows = {r.tobytes() for r in p1.train.x}
    assert not any(r.tobytes() in train_rows for r in p1.val.x)
    assert not np.array_equal(prepare(ds, 0.25, seed=6).val.x, p1.val.x)
    assert len(prepare(ds, 0.2, train_subset=40, test_subset=8).train) == 40
    small = prepare(ds, 0.25, seed=5, val_subset=20, test_subset=8)
    assert (len(small.val), len(small.test)) == (20, 8) and sorted(np.bincount(small.val.y)) == [5, 5, 5, 5]
    val_rows = {r.tobytes() for r in p1.val.x}
    assert all(r.tobytes() in val_rows for r in small.val.x)  # a subset of the same validation split
    assert len(small.train) == len(p1.train)  # shrinking validation leaves training alone
    with pytest.raises(UserError, match="val_split"):
        prepare(ds, 1.5)


@pytest.mark.slow
def test_real_mnist_npz():
    ds = load_dataset(str(SHARED / "mnist.npz"))
    assert (len(ds["train"]), len(ds["test"]), ds.num_classes) == (60000, 10000, 10)
    assert ds.checksum == "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"


@pytest.mark.slow
def test_real_cifar_jpeg_archive():
    ds = load_dataset(str(SHARED / "cifar10-jpeg.tar.gz"))
    assert (len(ds["train"]), len(ds["test"]), ds.num_classes) == (50000, 10000, 10)
    assert ds.image_shape == (32, 32, 3)
    assert ds.checksum == "23f88bfe53fbfc9f4f67bd2d3df9256c3daf93811b338151df637ddc19c7bcce"


def test_fashion_mnist_by_name_has_its_class_names(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    (tmp_path / "fashion-mnist").mkdir()
    np.savez(tmp_path / "fashion-mnist" / "fashion-mnist.npz", x_train=x, y_train=np.arange(10), x_test=x[:3], y_test=np.arange(3))
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert ds.class_names[9] == "ankle boot" and len(ds["train"]) == 10
    with pytest.raises(UserError, match="mnist not found"):
        load_dataset("mnist", data_dir=tmp_path / "empty")


def test_a_relative_data_path_is_found_under_clsf_data_and_data_dir_from_any_folder(tmp_path, monkeypatch):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    make_image_tree(store / "pets", classes=("cat", "dog"))
    tar_dir(store / "pets", store / "pets.tar.gz")
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CLSF_DATA", raising=False)
    with pytest.raises(UserError, match="does not exist.*--data-dir and \\$CLSF_DATA"):
        load_dataset("pets.tar.gz")
    assert load_dataset("pets.tar.gz", data_dir=store).class_names == ["cat", "dog"]
    monkeypatch.setenv("CLSF_DATA", str(store))
    ds = load_dataset("pets.tar.gz")
    assert ds.class_names == ["cat", "dog"] and ds.source == str(store / "pets.tar.gz")
    assert load_dataset("pets").num_classes == 2  # a folder too
