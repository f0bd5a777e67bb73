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

Weights are loaded with ``np.frombuffer`` on the file's bytes, read once into
private memory (``mmap_weights=True``: a read-only mmap), or on the given bytes;
loading never executes code from the file (no pickle).
JSON is written with sorted keys and no timestamps, so the same program gives
byte-identical files.  Non-finite floats are tagged (``{"$float": "nan"}``)
so the JSON stays strict and NaN/inf attributes survive exactly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import mmap
import os
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ir.types import DType
from runtime.errors import InvalidOmError, OmFormatError
from runtime.validate import check_json_depth, host_limit, validate_executable

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
MAX_JSON_BYTES = 256 << 20  # header and index each

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
    _buffer: Any = field(default=None, repr=False, compare=False)  # keeps the file's bytes (or mmap) alive

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
    def load(cls, source: str | os.PathLike | bytes | bytearray | memoryview, *,
             max_bytes: int | None = None, mmap_weights: bool = False) -> Executable:
        """Load and validate: the frame (magic, version, sizes, checksum; `OmFormatError`),
        then the program (`runtime.validate`; `InvalidOmError`), before anything is allocated.
        `max_bytes` caps the memory the program may ask for (default: `runtime.validate.host_limit`).

        A file is read into private memory: a loaded executable does not change, or crash the
        process, when its file is replaced or truncated under it.  ``mmap_weights=True`` maps the
        file instead (zero-copy, pages shared between processes), with mmap's contract: the file
        must not be truncated while the executable lives -- reading a page past the new end is
        SIGBUS, which no Python code can catch."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return read_om(memoryview(source), name="<bytes>", max_bytes=max_bytes)
        path = Path(source)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise OmFormatError(f"{path}: empty file, not an .om executable")
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise OmFormatError(f"{path}: not a regular file")
                if mmap_weights:
                    buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                else:
                    limit = host_limit(max_bytes)
                    if size > limit:
                        raise OmFormatError(f"{path}: {size} bytes, over the host limit of {limit} "
                                            f"(ATCPY_OM_MAX_BYTES or max_bytes= sets it)")
                    buf = f.read(size)
        except FileNotFoundError:
            raise OmFormatError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise OmFormatError(f"{path}: is a directory, not an .om file") from None
        except PermissionError as e:
            raise OmFormatError(f"{path}: cannot read: {e.strerror}") from None
        exe = read_om(memoryview(buf), name=str(path), max_bytes=max_bytes)
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
    """Write `data` to a temp file beside `path`, fsync, then rename: never half-written.
    The file gets the permissions of the one it replaces, or 0666 less the umask.
    The temp file (``.<name>.<pid>.<random>.tmp``) is removed on every failure; temps that a
    killed earlier write left beside `path` are swept first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_temps(path)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            f = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)  # fdopen did not take the descriptor
            raise
        with f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)  # mkstemp made it 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_file_mode(path: Path) -> int:
    """The permissions `path` gets: those of the file it replaces, else 0666 less the umask
    (what ``open(path, "w")`` would give)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without setting it (os.umask is process-wide and racy between threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


_STALE_SECONDS = 3600.0  # a temp without a pid in its name (an older atcpy's) counts as stale after this


def _sweep_stale_temps(path: Path) -> None:
    """Remove ``.<name>.*.tmp`` files beside `path` whose writer is gone: the pid in the name is
    not a running process (or, with no pid in the name, the file is over an hour old)."""
    import glob
    import time

    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid_text = tmp.name[len(prefix):].split(".", 1)[0]
        try:
            if pid_text.isdigit():
                if _process_alive(int(pid_text)):
                    continue
            elif time.time() - tmp.lstat().st_mtime < _STALE_SECONDS:
                continue
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink()
        except OSError:  # another writer swept it first, or it is not ours to remove
            continue


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or a pid we cannot ask about: leave its file alone
    return True


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
def read_om(buf: memoryview, name: str = "<bytes>", *, max_bytes: int | None = None) -> Executable:
    """Parse and validate an .om image (see the module docstring and `runtime.validate`)."""
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
    header = _parse_json(bytes(buf[hstart: hstart + hlen]), "header", name)
    index = _parse_json(bytes(buf[istart: istart + ilen]), "weight index", name)
    if not isinstance(header, dict) or "program" not in header:
        raise OmFormatError(f"{name}: .om header has no program")
    if not isinstance(index, dict):
        raise InvalidOmError(f"{name}: the weight index is not a JSON object")
    weights = {wname: _weight(buf, wname, ent, dstart, dlen, name) for wname, ent in index.items()}
    _check_disjoint(index, name)
    validate_executable(header, weights, name=name, max_bytes=max_bytes)
    return Executable(header, weights)


def _parse_json(raw: bytes, what: str, name: str) -> Any:
    """Strict JSON of bounded size and nesting (`json.loads` recurses per level)."""
    if len(raw) > MAX_JSON_BYTES:
        raise InvalidOmError(f"{name}: the {what} is {len(raw)} bytes (at most {MAX_JSON_BYTES})")
    check_json_depth(raw, what, name)
    try:
        return decode_json_value(json.loads(raw)) if what == "header" else json.loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise OmFormatError(f"{name}: unreadable .om {what}: {e}") from None


def _weight(buf: memoryview, wname: str, ent: Any, dstart: int, dlen: int, name: str) -> np.ndarray:
    """One weight index entry as a read-only array onto the data section."""
    where = f"{name}: weight {wname!r:.80}"
    if not isinstance(ent, dict):
        raise InvalidOmError(f"{where}: index entry is not an object")
    shape = ent.get("shape")
    if not isinstance(shape, list) or len(shape) > 64 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 1 << 62 for s in shape):
        raise InvalidOmError(f"{where}: shape {shape!r:.80} is not a list of non-negative ints")
    count = math.prod(shape)
    if ent.get("dtype") == "str":
        strings = ent.get("strings")
        if not isinstance(strings, list) or len(strings) != count or not all(isinstance(x, str) for x in strings):
            raise InvalidOmError(f"{where}: strings do not match shape {shape}")
        return np.array(strings, dtype=object).reshape(shape)
    dt = np_dtype(ent.get("dtype")) if isinstance(ent.get("dtype"), str) else None
    off, nb = ent.get("offset"), ent.get("nbytes")
    if dt is None or dt.kind == "O":
        raise InvalidOmError(f"{where}: bad dtype {ent.get('dtype')!r:.40}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (off, nb)):
        raise InvalidOmError(f"{where}: offset and nbytes must be integers")
    if off < 0 or off + nb > dlen or nb != count * dt.itemsize:
        raise InvalidOmError(f"{where}: lies outside the data section or has a bad size")
    if off % ALIGN:
        raise InvalidOmError(f"{where}: offset {off} is not {ALIGN}-byte aligned (the writer aligns every tensor)")
    return np.frombuffer(buf, dtype=dt, count=count, offset=dstart + off).reshape(shape)


def _check_disjoint(index: dict[str, Any], name: str) -> None:
    """The writer lays the weights out one after another: two entries sharing bytes is an
    edited index, not a program (it would alias one weight's data as another's)."""
    spans = sorted((e["offset"], e["offset"] + e["nbytes"], w) for w, e in index.items()
                   if isinstance(e, dict) and e.get("dtype") != "str" and e.get("nbytes", 0) > 0)
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        if start < end:
            raise InvalidOmError(f"{name}: weights {a!r:.80} and {b!r:.80} overlap in the data section")


def load_executable(source: str | os.PathLike | bytes | bytearray | memoryview, *,
                    max_bytes: int | None = None) -> Executable:
    """`Executable.load` as a function (what the CLIs call)."""
    return Executable.load(source, max_bytes=max_bytes)
