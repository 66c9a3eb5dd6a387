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


def iter_archive(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (safe relative name, bytes) for every regular file in a zip or tar(.gz) archive."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                for info in infos:  # check every name before reading any
                    safe_member_name(info.filename, path)
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
                for m in members:
                    if m.isfile():
                        yield safe_member_name(m.name, path), tf.extractfile(m).read()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{path}: the archive is corrupt or truncated ({e}); download or rebuild it.") from None
