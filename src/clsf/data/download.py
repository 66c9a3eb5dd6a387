"""Downloading a file into the cache with a checksum, atomically.

The file is streamed to a temporary name beside its target, its MD5 is checked, and only then is it
renamed into place (an atomic rename on one filesystem). A failed, cut-off or corrupt download never
leaves a file under the target name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from clsf.errors import UserError


def download(url: str, target: Path, md5: str, timeout: float = 60.0, quiet: bool = False) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    h = hashlib.md5()
    got = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            if not quiet:
                print(f"downloading {url} -> {target}")
            while block := resp.read(1 << 20):
                out.write(block)
                h.update(block)
                got += len(block)
        if expected is not None and got != expected:
            raise UserError(
                f"download of {url} stopped after {got} of {expected} bytes; run the command again "
                "or place the file in the data directory by hand."
            )
        if h.hexdigest() != md5:
            raise UserError(
                f"download of {url} has MD5 {h.hexdigest()}, expected {md5}; the file is corrupt or "
                "not the dataset — try again, or download it by hand into the data directory."
            )
        os.replace(tmp, target)
        return target
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise UserError(
            f"could not download {url} ({e}); check the network, or place the file in "
            f"{target.parent} (or pass --data-dir) yourself."
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()
