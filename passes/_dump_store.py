"""The arrays of IR dumps, written once per dump directory.

``--dump_ir`` writes the IR after every pass.  Most passes leave the weights as
they were -- the same `numpy` arrays -- so writing each dump's arrays beside it
wrote a resnet18's 45 MB of weights 30 times.  A `DumpStore` keeps one ``.npy``
per distinct array under ``<dir>/arrays/``; an array a pass did not touch (the
same object, or equal bytes) is not written again.  Each dump's ``.npz`` is then
only an index: resource key -> file name (see `passes.manager.write_dump`).
"""

from __future__ import annotations

import hashlib
import weakref
from pathlib import Path

import numpy as np

__all__ = ["ARRAYS_DIR", "DumpStore"]

ARRAYS_DIR = "arrays"


class DumpStore:
    """Files for the arrays of the dumps under `root` (``root/arrays/<digest>.npy``)."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / ARRAYS_DIR
        self._by_id: dict[int, tuple[weakref.ref, str]] = {}  # an array seen before -> its file
        self._written: set[str] = set()
        self.bytes_written = 0

    def put(self, a: np.ndarray) -> str:
        """The file name (under `dir`) that holds `a`, written if no earlier dump wrote it."""
        seen = self._by_id.get(id(a))
        if seen is not None and seen[0]() is a:
            return seen[1]
        name = _digest(a) + ".npy"
        if name not in self._written:
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / name
            if not path.exists():  # an earlier compile into the same directory wrote these bytes
                np.save(path, a, allow_pickle=False)
                self.bytes_written += a.nbytes
            self._written.add(name)
        try:
            self._by_id[id(a)] = (weakref.ref(a), name)
        except TypeError:  # a view of a non-weakref-able buffer: hashed again next time
            pass
        return name


def _digest(a: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).data if a.dtype != object else a.astype(str).tobytes())
    return h.hexdigest()
