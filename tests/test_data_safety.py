"""Crafted pickles must not run code; archives must not reach outside their folder; downloads must
never leave a corrupt file in the cache."""

import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clsf.data import load_dataset
from clsf.data.cifar import MD5, TARBALL, load_cifar10
from clsf.data.download import download
from clsf.data.safe_pickle import safe_load
from clsf.errors import UserError
from helpers import make_cifar_folder, make_image_tree, png_bytes, tar_dir


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Exploit(marker), b"labels": [0]}, protocol=2)
    with pytest.raises(UserError, match="refusing to load this pickle.*posix.system|refusing to load this pickle.*os.system"):
        safe_load(payload, "evil")
    assert not marker.exists()


def test_crafted_batch_inside_a_cifar_folder(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    make_cifar_folder(root)
    marker = tmp_path / "pwned"
    (root / "data_batch_3").write_bytes(pickle.dumps(_Exploit(marker), protocol=2))
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset(str(root))
    assert not marker.exists()


def test_real_batch_layout_is_accepted():
    arr = np.arange(12, dtype=np.uint8).reshape(2, 6)
    out = safe_load(pickle.dumps({b"data": arr, b"labels": [1, 2]}, protocol=2), "ok")
    np.testing.assert_array_equal(out[b"data"], arr)


def _escaping_zip(path: Path, name: str) -> Path:
    ok = png_bytes(np.zeros((4, 4, 3), np.uint8))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/0.png", ok)
        zf.writestr("b/0.png", ok)
        zf.writestr(name, ok)
    return path


@pytest.mark.parametrize("name", ["../evil/0.png", "/abs/0.png", "a/../../0.png"])
def test_zip_escape_refused(tmp_path, name):
    with pytest.raises(UserError, match="outside the archive"):
        load_dataset(str(_escaping_zip(tmp_path / "x.zip", name)))


@pytest.mark.parametrize("name", ["../evil/0.png", "/abs/0.png"])
def test_tar_escape_refused(tmp_path, name):
    ok = png_bytes(np.zeros((4, 4, 3), np.uint8))
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tf:
        for n in ("a/0.png", "b/0.png", name):
            info = tarfile.TarInfo(n)
            info.size = len(ok)
            tf.addfile(info, io.BytesIO(ok))
    with pytest.raises(UserError, match="outside the archive"):
        load_dataset(str(path))


def test_tar_symlink_refused(tmp_path):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("a/link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(UserError, match="is a link"):
        load_dataset(str(path))


# --- downloads, against a server on 127.0.0.1 -------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    cut_at = None  # send this many bytes, then drop the connection

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body if self.cut_at is None else self.body[: self.cut_at])
        self.wfile.flush()
        if self.cut_at is not None:
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/{TARBALL}"
    httpd.shutdown()
    httpd.server_close()
    _Handler.body, _Handler.cut_at = b"", None


def _tarball_bytes(tmp_path) -> bytes:
    make_cifar_folder(tmp_path / "src" / "cifar-10-batches-py")
    return tar_dir(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "t.tar.gz").read_bytes()


def test_download_success_then_cached(tmp_path, server):
    _, url = server
    _Handler.body = _tarball_bytes(tmp_path)
    target = tmp_path / "dl" / TARBALL
    download(url, target, hashlib.md5(_Handler.body).hexdigest(), quiet=True)
    assert target.read_bytes() == _Handler.body
    assert [p.name for p in target.parent.iterdir()] == [TARBALL]


def test_cifar10_downloads_when_missing(tmp_path, server, monkeypatch):
    _, url = server
    _Handler.body = _tarball_bytes(tmp_path)
    monkeypatch.setattr("clsf.data.cifar.MD5", hashlib.md5(_Handler.body).hexdigest())
    ds = load_cifar10(tmp_path / "dd", url=url)
    assert len(ds["train"]) == 30 and (tmp_path / "dd" / TARBALL).exists()


def test_checksum_mismatch_leaves_nothing(tmp_path, server):
    _, url = server
    _Handler.body = b"not the dataset" * 100
    target = tmp_path / "dl" / TARBALL
    with pytest.raises(UserError, match="MD5"):
        download(url, target, MD5, quiet=True)
    assert list(target.parent.iterdir()) == []


def test_cut_off_download_leaves_no_corrupt_cache(tmp_path, server):
    _, url = server
    _Handler.body = _tarball_bytes(tmp_path)
    _Handler.cut_at = len(_Handler.body) // 2
    target = tmp_path / "dl" / TARBALL
    with pytest.raises(UserError):
        download(url, target, hashlib.md5(_Handler.body).hexdigest(), quiet=True)
    assert list(target.parent.iterdir()) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="could not download"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", MD5, timeout=5, quiet=True)
    assert not (tmp_path / "x").exists()


# --- caches that heal ------------------------------------------------------------------------------

def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    else:  # one bit flipped in the middle of the image bytes (the zip stays readable)
        data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "empty", "bitflip"])
def test_a_damaged_decoded_cache_is_rebuilt(tmp_path, capsys, how):
    make_image_tree(tmp_path / "imgs", per_class=20, size=(16, 16))
    first = load_dataset(str(tmp_path / "imgs"))
    (cache,) = (Path(os.environ["CLSF_CACHE"]) / "decoded").glob("*.npz")
    _damage(cache, how)
    again = load_dataset(str(tmp_path / "imgs"))  # a correct dataset, not a traceback
    assert np.array_equal(again["train"].x, first["train"].x) and np.array_equal(again["test"].y, first["test"].y)
    err = capsys.readouterr().err
    assert "decoded-data cache" in err and "is damaged" in err and "rebuilding it" in err
    load_dataset(str(tmp_path / "imgs"))  # the rebuilt cache is whole: read without a warning
    assert capsys.readouterr().err == ""


def test_a_damaged_cached_download_is_fetched_again(tmp_path, server, monkeypatch, capsys):
    _, url = server
    _Handler.body = _tarball_bytes(tmp_path)
    monkeypatch.setattr("clsf.data.cifar.MD5", hashlib.md5(_Handler.body).hexdigest())
    cached = Path(os.environ["CLSF_CACHE"]) / "data" / TARBALL
    cached.parent.mkdir(parents=True)
    cached.write_bytes(_Handler.body[: len(_Handler.body) // 3])  # a copy cut short after it was downloaded
    ds = load_cifar10(url=url)
    assert len(ds["train"]) == 30 and cached.read_bytes() == _Handler.body
    assert "is damaged (MD5 differs); downloading it again" in capsys.readouterr().err
