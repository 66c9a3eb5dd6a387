"""Reading zip and tar archives without ever touching paths outside them.

Archives are read in memory entry by entry (nothing is extracted to disk), and every member name is
checked first: an absolute path or a `..` component is refused, because a crafted archive could
otherwise make any later extraction write outside its folder.
"""

from __future__ import annotations

import posixpath
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

from clsf.errors import UserError


def safe_member_name(name: str, archive: Path) -> str:
    norm = name.replace("\\", "/")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in parts:
        raise UserError(
            f"{archive}: archive entry '{name}' points outside the archive's folder; "
            "refusing to read it — rebuild the archive with relative paths."
        )
    return posixpath.join(*parts) if parts else ""


def is_archive(path: Path) -> bool:
    return path.is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path))


MAX_MEMBER = 2**30  # bytes: one member read into memory (CIFAR's python batches are 30 MiB, images far less)
MAX_RATIO = 1000  # a zip member's declared size over its compressed size: above, a decompression bomb


def check_sizes(path: Path, sizes: list[tuple[str, int, int | None]]) -> None:
    """Refuse, before reading anything, a member too large to hold or compressed beyond any image's
    ratio, and an archive whose members add up to more than this machine's memory."""
    from clsf.data.base import machine_memory

    for name, size, packed in sizes:
        if size > MAX_MEMBER:
            raise UserError(f"{path}: archive entry '{name}' declares {size / 2**30:.1f} GiB, more than one "
                            f"entry may hold ({MAX_MEMBER / 2**30:.0f} GiB); rebuild the archive with smaller files.")
        if packed is not None and size > 2**20 and size > MAX_RATIO * max(packed, 1):
            raise UserError(f"{path}: archive entry '{name}' expands {size // max(packed, 1):,}x (a decompression "
                            "bomb?); clsf will not unpack it.")
    total = sum(s for _, s, _ in sizes)
    if total > machine_memory():
        raise UserError(f"{path}: the archive's files add up to {total / 2**30:.1f} GiB, more than this machine's "
                        f"memory ({machine_memory() / 2**30:.1f} GiB); unpack it to a folder (data.stream streams folders).")


def iter_archive(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (safe relative name, bytes) for every regular file in a zip or tar(.gz) archive."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                for info in infos:  # check every name before reading any
                    safe_member_name(info.filename, path)
                check_sizes(path, [(i.filename, i.file_size, i.compress_size) for i in infos if not i.is_dir()])
                for info in infos:
                    if not info.is_dir():
                        yield safe_member_name(info.filename, path), zf.read(info)
        else:
            with tarfile.open(path, "r:*") as tf:
                members = tf.getmembers()
                for m in members:
                    safe_member_name(m.name, path)
                    if m.issym() or m.islnk():
                        raise UserError(
                            f"{path}: archive entry '{m.name}' is a link; refusing to follow links "
                            "in archives — rebuild the archive with plain files."
                        )
                check_sizes(path, [(m.name, m.size, None) for m in members if m.isfile()])
                for m in members:
                    if m.isfile():
                        yield safe_member_name(m.name, path), tf.extractfile(m).read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{path}: the archive is corrupt or truncated ({e}); download or rebuild it.") from None
