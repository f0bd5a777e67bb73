"""Reading `.npy` and `.npz` input files without trusting them.

`numpy.load` believes a file's header: a `.npy` whose header claims 10¹² elements
is allocated as claimed (MemoryError), and an `.npz` member is decompressed whole
before anyone looks at its shape -- a 2 MB archive can hold 2 GiB of zeros.  Here
the header is read first and checked -- dtype (no objects), the shape against
what the reader expects, the size against a byte limit and, for a `.npy`, against
the bytes the file really has -- and only then exactly the claimed bytes are read
(an `.npz` member is decompressed up to that size and no further).  Every problem
is an `InputError` (exit 5) naming the file, the member and what is wrong.

`expect` is a shape to check the header against: an int must match, anything else
(a symbol such as ``"batch_size"``, or None) matches any size.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from runtime.errors import InputError

__all__ = ["MAX_NPZ_MEMBERS", "load_npy", "load_npz", "npz_keys"]

MAX_NPZ_MEMBERS = 4096  # more arrays than any model has inputs; bounds the directory we walk
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}

Expect = Sequence[Any] | None


def _header(f: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    try:
        version = np.lib.format.read_magic(f)
        reader = _HEADER_READERS.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        shape, fortran, dtype = reader(f)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise InputError(f"{where}: not a valid .npy array: {e}") from None
    if dtype.hasobject:
        raise InputError(f"{where}: holds Python objects (dtype {dtype}); inputs must be plain numeric arrays")
    return tuple(int(d) for d in shape), dtype, bool(fortran)


def _check(where: str, shape: tuple[int, ...], dtype: np.dtype, expect: Expect, limit: int) -> int:
    if expect is not None:
        fixed = all(isinstance(d, int) for d in expect)
        if len(shape) != len(expect) or any(isinstance(e, int) and e != d for d, e in zip(shape, expect)):
            want = "x".join(str(e) if isinstance(e, int) else (str(e) or "?") for e in expect) or "a scalar"
            raise InputError(f"{where}: its header says shape {list(shape)}, the input takes {want}"
                             + ("" if fixed else " (named dims may vary)"))
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > limit:
        raise InputError(f"{where}: its header claims {list(shape)} {dtype} = {nbytes} bytes, over the "
                         f"{limit}-byte input limit")
    return nbytes


def _array(raw: bytes, shape: tuple[int, ...], dtype: np.dtype, fortran: bool) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=dtype)
    arr = arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
    return arr.copy()  # writable, aligned, owns its memory


def _read_exactly(f: IO[bytes], nbytes: int, where: str) -> bytes:
    raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise InputError(f"{where}: truncated -- the header claims {nbytes} data bytes, the file has {len(raw)}")
    return raw


def load_npy(path: str | Path, expect: Expect, limit: int) -> np.ndarray:
    """The array in the `.npy` at `path`, checked against `expect` and `limit` from its header."""
    where = str(path)
    try:
        with open(path, "rb") as f:
            shape, dtype, fortran = _header(f, where)
            nbytes = _check(where, shape, dtype, expect, limit)
            left = Path(path).stat().st_size - f.tell()
            if left < nbytes:
                raise InputError(f"{where}: truncated -- the header claims {nbytes} data bytes, the file has {left}")
            return _array(_read_exactly(f, nbytes, where), shape, dtype, fortran)
    except OSError as e:
        raise InputError(f"{where}: cannot read input: {e.strerror or e}") from None


def load_npz(path: str | Path, expect_of: Callable[[str], Expect], limit: int,
             names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of the `.npz` at `path` (only `names` when given), each checked from its
    header before it is decompressed; `expect_of(key)` gives the shape a member must have."""
    try:
        with zipfile.ZipFile(path) as z:
            members = [i for i in z.infolist() if i.filename.endswith(".npy")]
            if len(members) > MAX_NPZ_MEMBERS:
                raise InputError(f"{path}: {len(members)} arrays, more than the {MAX_NPZ_MEMBERS} an input file "
                                 f"may hold")
            out: dict[str, np.ndarray] = {}
            for info in members:
                key = info.filename[:-4]
                if names is not None and key not in names:
                    continue
                where = f"{path}[{key!r}]"
                with z.open(info) as f:
                    shape, dtype, fortran = _header(f, where)
                    nbytes = _check(where, shape, dtype, expect_of(key), limit)
                    out[key] = _array(_read_exactly(f, nbytes, where), shape, dtype, fortran)
            return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as e:
        raise InputError(f"{path}: not a valid .npz archive: {e}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read input: {e.strerror or e}") from None


def npz_keys(path: str | Path) -> list[str]:
    """The array names in the `.npz` at `path`, in archive order (nothing decompressed)."""
    try:
        with zipfile.ZipFile(path) as z:
            keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        raise InputError(f"{path}: not a valid .npz archive: {e}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read input: {e.strerror or e}") from None
    if len(keys) > MAX_NPZ_MEMBERS:
        raise InputError(f"{path}: {len(keys)} arrays, more than the {MAX_NPZ_MEMBERS} an input file may hold")
    return keys
