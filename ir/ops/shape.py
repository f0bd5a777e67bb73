"""The shape program: integer values computed from input dims (``sym.*``).

Exporters compute shapes at run time (``Shape -> Gather -> Concat -> Reshape``).
When those values depend only on the input dims, the frontend and canonicalize
fold them into ``sym.dims``: a small int tensor whose elements are dim
expressions of the graph's symbols.  Type inference reads them like constants
(`shape_operand`), so a Reshape to ``[batch_size, sequence_length, 64]`` has that
type; at run time the Session evaluates them on the host from the feeds' shapes,
before any kernel runs — never a data-dependent step, never the AICPU.

    %s = Shape(%input_ids) : (tensor<batch_sizexsequence_lengthxi64>) -> tensor<2xi64>
    // ==>
    %s = sym.dims() {dims = ["batch_size", "sequence_length"], dtype = "i64", shape = [2]} : () -> tensor<2xi64>
"""

from __future__ import annotations

import numpy as np

from ir.core import Op
from ir.registry import SHAPE_PROGRAM, Attr, TypeInferenceError, define
from ir.symbolic import UNKNOWN, parse_dim
from ir.types import Dim, DType, TensorType

__all__ = ["fold_symbolically", "shape_operand", "shape_value_op", "sym_dims"]


def _sym_dims(op: Op) -> list[TensorType]:
    dims, shape = op.attrs.get("dims"), op.attrs.get("shape")
    if not isinstance(dims, list) or not isinstance(shape, list) or len(shape) > 1:
        raise TypeInferenceError("sym.dims needs `dims` (a list) and `shape` ([] or [n])")
    if int(np.prod(shape, dtype=np.int64)) != len(dims):
        raise TypeInferenceError(f"sym.dims: {len(dims)} dims do not fill shape {shape}")
    if any(not isinstance(d, int) and (d == UNKNOWN or parse_dim(d) is None) for d in dims):
        raise TypeInferenceError(f"sym.dims: {dims} holds a dim that is not an expression of symbols")
    return [TensorType(DType(op.attrs.get("dtype", "i64")), tuple(shape))]


define("sym.dims", operands=0, infer=_sym_dims, traits={SHAPE_PROGRAM},
       attrs={"dims": Attr("any", required=True), "shape": Attr("ints", required=True),
              "dtype": Attr("str", "i64")},
       doc='%s = sym.dims() {dims = ["batch_size", 64], shape = [2]} : () -> tensor<2xi64>')


def sym_dims(op: Op | None) -> list[Dim] | None:
    """The dims a ``sym.dims`` op holds (flattened), else None."""
    if op is None or op.kind != "sym.dims":
        return None
    return list(op.attrs["dims"])


def shape_operand(op: Op, i: int) -> list[Dim] | None:
    """Operand `i` as a flat list of dims when it is a constant (ints) or a
    ``sym.dims`` value (expressions); None otherwise."""
    if i >= len(op.operands) or op.operands[i] is None:
        return None
    c = op.operand_const(i)
    if c is not None:
        return [int(x) for x in np.asarray(c).reshape(-1)] if np.asarray(c).dtype.kind in "iu" else None
    return sym_dims(op.operands[i].producer)


def fold_symbolically(op: Op):
    """`op`'s value when it is shape arithmetic on constants and ``sym.dims``
    values (`ir.symfold`): an array when every element is an int, a `Sym`
    otherwise, None when it does not fold."""
    from ir.symfold import Sym, fold_shape_op

    if len(op.results) != 1:
        return None
    vals = []
    for i, v in enumerate(op.operands):
        if v is None:
            vals.append(None)
            continue
        c = op.operand_const(i)
        dims = sym_dims(v.producer)
        vals.append(c if c is not None else Sym(tuple(v.type.shape), tuple(dims)) if dims is not None else None)
    types = [None if v is None else v.type for v in op.operands] + [r.type for r in op.results]
    return fold_shape_op(op.kind, op.attrs, vals, types)


def shape_value_op(val, dtype: DType, name: str) -> Op:
    """The op holding a value `fold_symbolically` gave for a result of `dtype`: a
    ``const`` when every element is an int, else a ``sym.dims``."""
    if isinstance(val, np.ndarray):
        val = val.astype(dtype.numpy) if dtype.is_int else val
        return Op("const", [], [TensorType(DType.from_numpy(val.dtype), val.shape)], {"value": val}, [name])
    attrs = {"dims": list(val.dims), "shape": list(val.shape), "dtype": dtype.value}
    return Op("sym.dims", [], [TensorType(dtype, val.shape)], attrs, [name])
