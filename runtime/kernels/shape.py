"""The shape program's kernel: ``sym.dims`` evaluated from the run's symbol values.

The Session binds each symbol (``batch_size``, ``sequence_length``) from the feeds'
shapes before any step runs and hands the bindings to these steps as
``attrs["_dims"]``; the result is a small int tensor (a Reshape target, a Range
bound), computed on the host.

    sym.dims {dims = ["batch_size", "sequence_length + 1"], shape = [2]}, _dims = {batch_size: 2, sequence_length: 7}
      -> array([2, 8])
"""

from __future__ import annotations

import numpy as np

from ir.symbolic import dim_value
from ir.types import DType
from runtime.kernels import kernel, slot

__all__: list[str] = []


@kernel("sym.dims")
def _sym_dims(inputs, attrs, out):
    env = attrs.get("_dims") or {}
    vals = [dim_value(d, env) for d in attrs["dims"]]
    dt = DType(attrs.get("dtype", "i64")).numpy
    r = np.array(vals, dtype=dt).reshape(attrs["shape"])
    o = slot(out, 0)
    if o is not None and o.shape == r.shape:
        o[...] = r
        return [o]
    return [r]
