"""A pickle loader that only rebuilds what a CIFAR batch file holds.

CIFAR-10/100 "python version" batches are pickles: dicts of bytes/str keys, lists of ints, bytes
file names and one uint8 numpy array. Plain `pickle.load` would run any callable a crafted file
names (`os.system`, ...). This unpickler resolves only the handful of numpy internals needed to
rebuild an array and refuses everything else.
"""

from __future__ import annotations

import io
import pickle

from clsf.errors import UserError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # Python 2 pickles of bytes under protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        return super().find_class(module, name)


def safe_load(data: bytes, where: str):
    """Unpickle `data` (bytes of one batch file) allowing only arrays, dicts, lists, str and bytes."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{where}: refusing to load this pickle because it asks for code a CIFAR batch never "
            f"contains ({e}); replace it with the original file from the dataset's site."
        ) from None
    except Exception as e:  # truncated or garbage bytes
        raise UserError(f"{where}: not a readable CIFAR batch ({type(e).__name__}: {e}); re-download it.") from None
