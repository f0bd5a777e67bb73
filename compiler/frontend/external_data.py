"""Initializers kept outside the model file (ONNX external data), mapped, not read.

A tensor whose ``data_location`` is EXTERNAL names a file (relative to the
model's directory), an offset and a length.  `map_external` maps those bytes
read-only (`numpy.memmap`) and hands back an array over them: nothing is read
until something reads the values, so importing a 7B model costs its graph, not
its 13 GB -- and a plan that never reads a weight (``weights_meta_only``,
``atcpy --mode=3``) can run on files whose bytes were never written.

    arr = map_external(tensor, "/models/llama")   # a read-only view of llama.onnx.data
    arr.shape, arr.nbytes                          # (32000, 4096), 262144000: no page touched

The location is checked as ONNX's loader does: relative, inside the model's
directory (no ``..``, no absolute path, no symlink out of it), and the bytes
must lie inside the file.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx

from ir.errors import UnsupportedModelError

__all__ = ["has_external_data", "map_external"]

# element types whose bytes are a plain little-endian numpy array (the rest -- bfloat16,
# float8, int4, strings -- go through numpy_helper, which reads and converts them)
_MAPPABLE = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8,
             onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
             onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL}


def has_external_data(proto: onnx.ModelProto) -> bool:
    """Whether any initializer of the main graph keeps its bytes in another file."""
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def _entries(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _resolve(base_dir: str, location: str, name: str) -> Path:
    where = Path(location)
    if not location or where.is_absolute() or ".." in where.parts:
        raise UnsupportedModelError(f"tensor {name!r}: external data location {location!r} must be a relative "
                                    "path inside the model's directory")
    base = Path(base_dir or ".").resolve()
    path = (base / where).resolve()
    if base not in path.parents:
        raise UnsupportedModelError(f"tensor {name!r}: external data {location!r} resolves outside the model's "
                                    f"directory ({path})")
    if not path.is_file():
        raise UnsupportedModelError(f"tensor {name!r}: external data file {str(path)!r} does not exist")
    return path


def map_external(t: onnx.TensorProto, base_dir: str = "") -> np.ndarray | None:
    """A read-only array over `t`'s external bytes, or None when `t` is not external
    or its element type is not a plain numpy dtype (the caller then reads it)."""
    if t.data_location != onnx.TensorProto.EXTERNAL or t.data_type not in _MAPPABLE or sys.byteorder != "little":
        return None
    info = _entries(t)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    shape = tuple(int(d) for d in t.dims)
    nbytes = math.prod(shape) * dtype.itemsize
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", nbytes))
    except ValueError:
        raise UnsupportedModelError(f"tensor {t.name!r}: external data offset/length are not integers: "
                                    f"{info}") from None
    path = _resolve(base_dir, info.get("location", ""), t.name)
    size = path.stat().st_size
    if offset < 0 or length != nbytes or offset + nbytes > size:
        raise UnsupportedModelError(
            f"tensor {t.name!r} {list(shape)} {dtype} needs {nbytes} bytes at offset {offset} of {path.name}, "
            f"which holds {size} (the tensor says length {length})")
    if nbytes == 0:
        return np.zeros(shape, dtype)
    mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return np.asarray(mm)  # a plain ndarray over the mapping (which it keeps alive): no copy, no read
