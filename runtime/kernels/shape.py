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

from ir.symbolic import dim_value, parse_dim
from ir.types import DType
from runtime.kernels import kernel, slot

__all__ = ["dims_program"]


def dims_program(attrs: dict) -> dict:
    """The parsed dims (``_exprs``) and result dtype (``_dtype``) of a ``sym.dims`` step:
    the Session adds them to the step's attributes at load, so a run parses nothing
    and writes nothing into attributes that concurrent runs share."""
    return {"_exprs": [d if isinstance(d, int) else parse_dim(d) for d in attrs["dims"]],
            "_dtype": DType(attrs.get("dtype", "i64")).numpy}


@kernel("sym.dims")
def _sym_dims(inputs, attrs, out):
    env = attrs.get("_dims") or {}
    if "_exprs" not in attrs:  # called outside a session
        attrs = {**attrs, **dims_program(attrs)}
    exprs = attrs["_exprs"]
    try:
        vals = [e if type(e) is int else e.value(env) for e in exprs]
    except AttributeError:  # a dim with no value ("?")
        vals = [dim_value(d, env) for d in attrs["dims"]]
    r = np.array(vals, dtype=attrs["_dtype"]).reshape(attrs["shape"])
    o = slot(out, 0)
    if o is not None and o.shape == r.shape:
        o[...] = r
        return [o]
    return [r]
