"""A minimal TensorBoard event-file writer for scalars and images, with no framework import, so
the torch engine writes the same files as the TF ones (and tensorboard itself need not be
installed). Why not tensorboard's own writer: it is not in the README's install (a torch-only
install has no tensorboard), it brings grpcio, protobuf, absl and werkzeug, and importing it took
0.33 s against this module's 0.008 s (bench/results/observations.md, O11). Reading the files is
TensorBoard's job (tests read them with its own reader where the extra is installed). Hyperparameters (TensorBoard's HParams dashboard) are written through tensorboard's
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
