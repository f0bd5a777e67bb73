"""The `.om` file format: reader and writer, import-light (json, hashlib, numpy).

The runtime loads an executable without importing anything compile-side, so
the one format implementation lives here; ``codegen/om.py`` re-exports it and
adds the builder that turns an IR graph into an `Executable`.

Layout (all integers little-endian)::

    offset  size
    0       8     magic  b"ATCPYOM\\0"
    8       4     u32 format version (FORMAT_VERSION)
    12      4     u32 reserved (0)
    16      8     u64 header_len      -- JSON: soc, model, options, program, memory plan, report
    24      8     u64 index_len       -- JSON: weight name -> {dtype, shape, offset, nbytes}
    32      8     u64 data_len        -- raw weight bytes
    40      24    zero padding (the prefix is 64 bytes)
    64      ...   header JSON, zero-padded to a multiple of 64
            ...   index JSON, zero-padded to a multiple of 64
            ...   weight data; every tensor starts at a 64-byte aligned offset
    end-32  32    sha256 of every byte before it

Weights are loaded with ``np.frombuffer`` on a read-only mmap (or the given
bytes): zero-copy, and loading never executes code from the file (no pickle).
JSON is written with sorted keys and no timestamps, so the same program gives
byte-identical files.  Non-finite floats are tagged (``{"$float": "nan"}``)
so the JSON stays strict and NaN/inf attributes survive exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ir.types import DType
from runtime.errors import OmFormatError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Executable",
    "decode_json_value",
    "dtype_name",
    "encode_json_value",
    "load_executable",
    "np_dtype",
    "read_om",
    "write_atomic",
    "write_om",
]

MAGIC = b"ATCPYOM\0"
FORMAT_VERSION = 1
ALIGN = 64
_PREFIX = struct.Struct("<8sII3Q24x")  # 64 bytes
_DIGEST = 32

def np_dtype(name: str) -> np.dtype:
    """The numpy dtype of an IR dtype name (``"f32"`` -> float32, little-endian); str -> object.
    bf16 is stored widened, as in `ir.types`."""
    try:
        dt = DType(name).numpy
    except ValueError:
        raise OmFormatError(f"unknown dtype {name!r}") from None
    return dt if dt.kind == "O" else dt.newbyteorder("<")


def dtype_name(dt: np.dtype) -> str:
    """The IR dtype name of a numpy dtype (float32 -> ``"f32"``); the inverse of `np_dtype`."""
    dt = np.dtype(dt)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    try:
        return DType.from_numpy(dt).value
    except TypeError:
        raise ValueError(f"no .om dtype for numpy dtype {dt}") from None


# --- JSON values that keep floats exact ----------------------------------------------
def encode_json_value(x: Any) -> Any:
    """Python/numpy scalars and lists -> strict JSON (non-finite floats tagged)."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)  # float32/float16 widen exactly
        return f if math.isfinite(f) else {"$float": repr(f)}
    if isinstance(x, str):
        return x
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [encode_json_value(v) for v in x]
    if isinstance(x, dict):
        return {str(k): encode_json_value(v) for k, v in x.items()}
    raise TypeError(f"cannot encode {type(x).__name__} as .om JSON")


def decode_json_value(x: Any) -> Any:
    if isinstance(x, list):
        return [decode_json_value(v) for v in x]
    if isinstance(x, dict):
        if len(x) == 1 and "$float" in x:
            return float(x["$float"])
        return {k: decode_json_value(v) for k, v in x.items()}
    return x


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True).encode()


def _pad(n: int) -> int:
    return -n % ALIGN


# --- the executable ---------------------------------------------------------------------
@dataclass
class Executable:
    """A loaded or freshly built executable: the header dict and the weights.

    ``header`` keys: ``soc_version``, ``model``, ``options``, ``program``
    (steps, activations, inputs, outputs), ``memory`` and ``report``.
    ``weights`` maps weight names to arrays (read-only views after `load`).
    """

    header: dict[str, Any]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    _buffer: Any = field(default=None, repr=False, compare=False)  # keeps the mmap alive

    # -- conveniences ------------------------------------------------------
    @property
    def program(self) -> dict[str, Any]:
        return self.header["program"]

    @property
    def report(self) -> dict[str, Any]:
        return self.header.get("report", {})

    def to_bytes(self) -> bytes:
        return write_om(self.header, self.weights)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a temp file in the same directory, then ``os.replace``."""
        path = Path(path)
        write_atomic(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, source: str | os.PathLike | bytes | bytearray | memoryview) -> Executable:
        """Load and validate (magic, version, sizes, checksum); raises `OmFormatError`."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return read_om(memoryview(source), name="<bytes>")
        path = Path(source)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise OmFormatError(f"{path}: empty file, not an .om executable")
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise OmFormatError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise OmFormatError(f"{path}: is a directory, not an .om file") from None
        except PermissionError as e:
            raise OmFormatError(f"{path}: cannot read: {e.strerror}") from None
        exe = read_om(memoryview(buf), name=str(path))
        exe._buffer = buf
        return exe

    def weight_index(self) -> dict[str, dict[str, Any]]:
        return {
            k: {"dtype": dtype_name(v.dtype), "shape": list(v.shape), "nbytes": int(v.nbytes)}
            for k, v in self.weights.items()
        }

    def to_json(self) -> dict[str, Any]:
        """What ``atcpy --mode=1`` writes: header (program, plan, report) + weight index, no bytes."""
        return {"format": {"magic": MAGIC.rstrip(b"\0").decode(), "version": FORMAT_VERSION},
                **self.header, "weights": self.weight_index()}


# --- writer -------------------------------------------------------------------------------
def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_om(header: dict[str, Any], weights: dict[str, np.ndarray]) -> bytes:
    index: dict[str, Any] = {}
    chunks: list[bytes] = []
    pos = 0
    for name, arr in weights.items():
        arr = np.asarray(arr)
        dname = dtype_name(arr.dtype)
        if dname == "str":
            # strings have no fixed-width bytes; they live in the index itself
            index[name] = {"dtype": "str", "shape": list(arr.shape), "strings": [str(s) for s in arr.reshape(-1)]}
            continue
        data = np.ascontiguousarray(arr, dtype=np_dtype(dname)).tobytes()
        index[name] = {"dtype": dname, "shape": list(arr.shape), "offset": pos, "nbytes": len(data)}
        chunks.append(data)
        pad = _pad(len(data))
        if pad:
            chunks.append(b"\0" * pad)
        pos += len(data) + pad
    hjson = _dumps(encode_json_value(header))
    ijson = _dumps(index)
    body = [
        _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(hjson), len(ijson), pos),
        hjson, b"\0" * _pad(len(hjson)), ijson, b"\0" * _pad(len(ijson)), *chunks,
    ]
    blob = b"".join(body)
    return blob + hashlib.sha256(blob).digest()


# --- reader --------------------------------------------------------------------------------
def read_om(buf: memoryview, name: str = "<bytes>") -> Executable:
    buf = buf.cast("B") if buf.format != "B" else buf
    n = len(buf)
    if n < _PREFIX.size + _DIGEST:
        if bytes(buf[:8]) != MAGIC[: min(n, 8)]:
            raise OmFormatError(f"{name}: not an atcpy .om file (bad magic)")
        raise OmFormatError(f"{name}: truncated .om file ({n} bytes, header alone needs {_PREFIX.size + _DIGEST})")
    magic, version, _reserved, hlen, ilen, dlen = _PREFIX.unpack(buf[: _PREFIX.size])
    if magic != MAGIC:
        raise OmFormatError(f"{name}: not an atcpy .om file (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise OmFormatError(f"{name}: .om format version {version} is not supported (this runtime reads "
                            f"version {FORMAT_VERSION}); recompile the model with this atcpy")
    hstart = _PREFIX.size
    istart = hstart + hlen + _pad(hlen)
    dstart = istart + ilen + _pad(ilen)
    expected = dstart + dlen + _DIGEST
    if expected != n:
        what = "truncated" if n < expected else "has trailing bytes"
        raise OmFormatError(f"{name}: .om file {what}: {n} bytes, the header says {expected}")
    digest = hashlib.sha256(buf[: n - _DIGEST]).digest()
    if digest != bytes(buf[n - _DIGEST:]):
        raise OmFormatError(f"{name}: checksum mismatch: the .om file is corrupt")
    try:
        header = decode_json_value(json.loads(bytes(buf[hstart: hstart + hlen])))
        index = json.loads(bytes(buf[istart: istart + ilen]))
    except (ValueError, UnicodeDecodeError) as e:
        raise OmFormatError(f"{name}: unreadable .om header: {e}") from None
    if not isinstance(header, dict) or "program" not in header:
        raise OmFormatError(f"{name}: .om header has no program")
    weights: dict[str, np.ndarray] = {}
    for wname, ent in index.items():
        try:
            shape = tuple(int(s) for s in ent["shape"])
            if ent["dtype"] == "str":
                weights[wname] = np.array(ent["strings"], dtype=object).reshape(shape)
                continue
            dt = np_dtype(ent["dtype"])
            off, nb = int(ent["offset"]), int(ent["nbytes"])
            count = int(np.prod(shape, dtype=np.int64))
            if off < 0 or off + nb > dlen or nb != count * dt.itemsize:
                raise OmFormatError(f"{name}: weight {wname!r} lies outside the data section or has a bad size")
            arr = np.frombuffer(buf, dtype=dt, count=count, offset=dstart + off).reshape(shape)
        except (KeyError, TypeError, ValueError) as e:
            raise OmFormatError(f"{name}: bad weight index entry {wname!r}: {e}") from None
        weights[wname] = arr
    return Executable(header, weights)



def load_executable(source: str | os.PathLike | bytes | bytearray | memoryview) -> Executable:
    """`Executable.load` as a function (what the CLIs call)."""
    return Executable.load(source)
