"""A minimal TensorBoard event-file writer for scalars and images, with no framework import, so
the torch engine writes the same files as the TF ones (and tensorboard itself need not be
installed). Hyperparameters (TensorBoard's HParams dashboard) are written through tensorboard's
own protos when the `tensorboard` extra is installed, and left out otherwise.

Format: a sequence of records `uint64 length | uint32 masked_crc32c(length) | data |
uint32 masked_crc32c(data)`, each data an `Event` protobuf, hand-encoded here:
Event{1: wall_time double, 2: step int64, 3: file_version string, 5: summary}
Summary{1: repeated Value}; Value{1: tag string, 2: simple_value float, 4: image};
Image{1: height, 2: width, 3: colorspace (1 gray, 3 RGB, 4 RGBA), 4: encoded PNG bytes}.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path


def text(value: str) -> str:
    """A string as valid UTF-8: a path's undecodable bytes (kept by Python as surrogates) shown as \\xNN."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_bytes(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


PNG_COLORSPACE = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> TensorBoard's colorspace (gray, RGB, gray+alpha, RGBA)


def _image_value(tag: str, png: bytes) -> bytes:
    """Value{tag, image} for a PNG, its size and colour type read from its IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{tag}: not a PNG")
    width, height = struct.unpack(">II", png[16:24])
    image = (_varint(1 << 3) + _varint(height) + _varint(2 << 3) + _varint(width)
             + _varint(3 << 3) + _varint(PNG_COLORSPACE.get(png[25], 3)) + _field_bytes(4, png))
    return _field_bytes(1, _field_bytes(1, tag.encode()) + _field_bytes(4, image))


def _event(step: int, *, version: str | None = None, scalars: dict[str, float] | None = None,
           start: bool = False, images: dict[str, bytes] | None = None, summary: bytes | None = None) -> bytes:
    msg = _varint(1 << 3 | 1) + struct.pack("<d", time.time()) + _varint(2 << 3 | 0) + _varint(step)
    if version is not None:
        msg += _field_bytes(3, version.encode())
    if start:  # SessionLog{status: START}: TensorBoard drops every earlier event at this step or later
        msg += _field_bytes(7, _varint(1 << 3 | 0) + _varint(1))
    if scalars:
        values = b"".join(
            _field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", float(v)))
            for tag, v in scalars.items()
        )
        msg += _field_bytes(5, values)
    if images:
        msg += _field_bytes(5, b"".join(_image_value(tag, png) for tag, png in images.items()))
    if summary is not None:  # a Summary serialised elsewhere (tensorboard's hparams protos)
        msg += _field_bytes(5, summary)
    return msg


class ScalarWriter:
    """Appends scalars to one events file in `logdir` (a new file per writer, as TF does).

    `purge_step` (a resumed run: the first epoch it trains again) writes TensorBoard's purge marker,
    as TF's and torch's writers do with the same argument, so scalars an interrupted run wrote for
    that epoch or later are dropped instead of shown twice."""

    opened = 0  # writers made in this process

    def __init__(self, logdir: Path, purge_step: int | None = None):
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        # a new file per writer, named so that files sort in the order written (TensorBoard reads them so)
        # and two writers in the same second (the scalars, then the final pictures) get a file each
        ScalarWriter.opened += 1
        self.path = logdir / (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}."
                              f"{ScalarWriter.opened:04d}.clsf")
        self._f = open(self.path, "ab")
        self._write(_event(0, version="brain.Event:2"))
        if purge_step is not None:
            self._write(_event(purge_step, start=True))

    def _write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._f.write(header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data)))
        self._f.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._write(_event(step, scalars=values))

    def images(self, step: int, pngs: dict[str, bytes]) -> None:
        """PNG pictures (a confusion matrix, a GAN's samples) under their tags, at `step`."""
        self._write(_event(step, images=pngs))

    def hparams(self, values: dict) -> bool:
        """The run's settings for TensorBoard's HParams dashboard, through tensorboard's own protos;
        False (nothing written) where the tensorboard extra is not installed."""
        try:
            from tensorboard.plugins.hparams import summary_v2
        except ImportError:
            return False
        kept = {k: text(v) if isinstance(v, str) else v for k, v in values.items()
                if isinstance(v, (bool, int, float, str))}  # what the plugin takes
        self._write(_event(0, summary=summary_v2.hparams_pb(kept).SerializeToString()))
        return True

    def close(self) -> None:
        self._f.close()


def read_scalars(path: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) scalar records of an events file, or of every events file in a folder in the
    order written, checking every CRC and applying purge markers as TensorBoard does."""
    path = Path(path)
    files = sorted(path.glob("events.out.tfevents.*")) if path.is_dir() else [path]
    out = []
    for f in files:
        data = f.read_bytes()
        i = 0
        while i < len(data):
            if len(data) - i < 12 or len(data) - i < 16 + struct.unpack_from("<Q", data, i)[0]:
                break  # a record cut short by a kill (records are appended): TensorBoard stops there too
            (n,) = struct.unpack_from("<Q", data, i)
            assert struct.unpack_from("<I", data, i + 8)[0] == masked_crc(data[i:i + 8]), "bad length crc"
            body = data[i + 12:i + 12 + n]
            assert struct.unpack_from("<I", data, i + 12 + n)[0] == masked_crc(body), "bad data crc"
            i += 16 + n
            step, scalars, start = _parse_event(body)
            if start:
                out = [r for r in out if r[0] < step]
            out.extend(scalars)
    return out


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def _fields(b: bytes):
    i = 0
    while i < len(b):
        key, i = _read_varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(b, i)
        elif wire == 1:
            v, i = b[i:i + 8], i + 8
        elif wire == 5:
            v, i = b[i:i + 4], i + 4
        else:
            n, i = _read_varint(b, i)
            v, i = b[i:i + n], i + n
        yield num, v


def _parse_event(body: bytes):
    step, out, start = 0, [], False
    for num, v in _fields(body):
        if num == 2:
            step = v
        elif num == 7:
            start = dict(_fields(v)).get(1) == 1
        elif num == 5:
            for vnum, value in _fields(v):
                if vnum == 1:
                    tag, val = "", None
                    for fnum, fv in _fields(value):
                        if fnum == 1:
                            tag = fv.decode()
                        elif fnum == 2:
                            val = struct.unpack("<f", fv)[0]
                    if val is not None:  # a scalar (images and plugin data are not)
                        out.append((step, tag, val))
    return step, out, start
