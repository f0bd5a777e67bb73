"""Fold the shape arithmetic exporters emit into values of the input dims.

``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains are integer
arithmetic on dims.  `fold_shape_op` evaluates one such op on operands that are
constants or symbolic dim vectors (`Sym`), giving a `Sym` (or a constant when
every element is an int).  The frontend and canonicalize turn the result into a
``sym.dims`` op (`ir.ops.shape`), so the ops downstream get exact symbolic types
and the chain never runs as data-dependent steps.

    Shape(x: tensor<batch_sizexsequence_lengthx64xf32>)       -> Sym((3,), ["batch_size", "sequence_length", 64])
    Gather(that, 1)                                              -> Sym((), ["sequence_length"])
    Add(that, Sym((), ["past_sequence_length"]))                 -> Sym((), ["past_sequence_length + sequence_length"])

Only values of rank 0 or 1 (shape vectors and scalars) are folded, and only ops
whose integer semantics on dims are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ir.symbolic import UNKNOWN, dim_add, dim_floordiv, dim_mul, dim_prod, dim_sub
from ir.types import Dim, TensorType

__all__ = ["Sym", "fold_shape_op"]

Value = Any  # np.ndarray | Sym | None


@dataclass(frozen=True)
class Sym:
    """A rank-0 or rank-1 int tensor whose elements are dims."""

    shape: tuple[int, ...]
    dims: tuple[Dim, ...]

    @staticmethod
    def of(v: Value) -> Sym | None:
        if isinstance(v, Sym):
            return v
        if isinstance(v, np.ndarray) and v.dtype.kind in "iu" and v.ndim <= 1:
            return Sym(v.shape, tuple(int(x) for x in v.reshape(-1)))
        return None


def _result(shape: tuple[int, ...], dims: Sequence[Dim]) -> Value:
    if any(d == UNKNOWN for d in dims):
        return None
    if all(isinstance(d, int) for d in dims):
        return np.array(dims, np.int64).reshape(shape)
    return Sym(tuple(shape), tuple(dims))


def _shape(attrs, vals, types) -> Value:
    t: TensorType | None = types[0]
    if t is None or any(d == UNKNOWN for d in t.shape):
        return None
    dims = list(t.shape)[slice(attrs.get("start", 0), attrs.get("end"))]
    return _result((len(dims),), dims)


def _size(attrs, vals, types) -> Value:
    t = types[0]
    return None if t is None or UNKNOWN in t.shape else _result((), [dim_prod(t.shape)])


def _gather(attrs, vals, types) -> Value:
    data, idx = Sym.of(vals[0]), vals[1]
    if data is None or not isinstance(idx, np.ndarray) or len(data.shape) != 1 or int(attrs.get("axis", 0)):
        return None
    n = data.shape[0]
    picks = [data.dims[int(i) % n] if -n <= int(i) < n else None for i in idx.reshape(-1)]
    return None if None in picks else _result(idx.shape, picks)


def _reshape_like(kind: str):
    """Unsqueeze/Squeeze/Reshape/Flatten/Identity of a scalar or vector: the same elements."""

    def fold(attrs, vals, types) -> Value:
        s = Sym.of(vals[0])
        if s is None:
            return None
        n = len(s.dims)
        if kind == "Squeeze":
            shape: tuple[int, ...] = () if n == 1 else (n,)
        elif kind == "Identity":
            shape = s.shape
        else:  # Unsqueeze of a scalar, or a vector kept a vector
            shape = (n,)
        return _result(shape, s.dims)

    return fold


def _concat(attrs, vals, types) -> Value:
    parts = [Sym.of(v) for v in vals]
    if any(p is None or len(p.shape) != 1 for p in parts):
        return None
    dims = [d for p in parts for d in p.dims]
    return _result((len(dims),), dims)


def _slice(attrs, vals, types) -> Value:
    data = Sym.of(vals[0])
    rest = [v for v in vals[1:]]
    if data is None or len(data.shape) != 1 or any(v is not None and not isinstance(v, np.ndarray) for v in rest):
        return None
    starts, ends = int(rest[0].reshape(-1)[0]), int(rest[1].reshape(-1)[0])
    step = int(rest[3].reshape(-1)[0]) if len(rest) > 3 and rest[3] is not None else 1
    dims = list(data.dims)[slice(starts, ends, step)]
    return _result((len(dims),), dims)


def _cast(attrs, vals, types) -> Value:
    from ir.types import DType

    to = DType.from_onnx(int(attrs["to"]))
    s = Sym.of(vals[0])
    return None if s is None or to not in (DType.i64, DType.i32) else _result(s.shape, s.dims)


def _elementwise(fn: Callable[[Dim, Dim], Dim]):
    def fold(attrs, vals, types) -> Value:
        a, b = Sym.of(vals[0]), Sym.of(vals[1])
        if a is None or b is None:
            return None
        if len(a.dims) == 1 and len(b.dims) != 1:
            a = Sym(b.shape, a.dims * len(b.dims))
        elif len(b.dims) == 1 and len(a.dims) != 1:
            b = Sym(a.shape, b.dims * len(a.dims))
        if len(a.dims) != len(b.dims):
            return None
        shape = a.shape if len(a.shape) >= len(b.shape) else b.shape
        return _result(shape, [fn(x, y) for x, y in zip(a.dims, b.dims)])

    return fold


def _div(x: Dim, y: Dim) -> Dim:
    if isinstance(y, int) and y > 0:
        return dim_floordiv(x, y)
    return x // y if isinstance(x, int) and isinstance(y, int) and y else UNKNOWN


def _equal(attrs, vals, types) -> Value:
    """Equal(dims, ints): a dim is never negative, so it never equals a negative int."""
    a, b = Sym.of(vals[0]), vals[1]
    if a is None or not isinstance(b, np.ndarray):
        return None
    c = [int(x) for x in b.reshape(-1)]
    if len(c) == 1:
        c = c * len(a.dims)
    if len(c) != len(a.dims):
        return None
    out = [d == k if isinstance(d, int) else (False if k < 0 else None) for d, k in zip(a.dims, c)]
    return None if None in out else np.array(out, bool).reshape(a.shape if len(a.shape) >= b.ndim else b.shape)


def _where(attrs, vals, types) -> Value:
    cond, a, b = vals
    sa, sb = Sym.of(a), Sym.of(b)
    if not isinstance(cond, np.ndarray) or sa is None or sb is None:
        return None
    n = max(cond.size, len(sa.dims), len(sb.dims))
    pick = np.broadcast_to(cond.reshape(-1), (n,))
    da = sa.dims * n if len(sa.dims) == 1 else sa.dims
    db = sb.dims * n if len(sb.dims) == 1 else sb.dims
    if len(da) != n or len(db) != n:
        return None
    return _result((n,) if n != 1 or cond.ndim else (), [x if p else y for p, x, y in zip(pick, da, db)])


_RULES: dict[str, Callable[..., Value]] = {
    "Shape": _shape, "Size": _size, "Gather": _gather, "Concat": _concat, "Slice": _slice, "Cast": _cast,
    "Unsqueeze": _reshape_like("Unsqueeze"), "Squeeze": _reshape_like("Squeeze"),
    "Reshape": _reshape_like("Reshape"), "Identity": _reshape_like("Identity"),
    "Add": _elementwise(dim_add), "Sub": _elementwise(dim_sub), "Mul": _elementwise(dim_mul),
    "Div": _elementwise(_div), "Equal": _equal, "Where": _where,
}


def fold_shape_op(kind: str, attrs: dict[str, Any], vals: Sequence[Value],
                  types: Sequence[TensorType | None]) -> Value:
    """The value of op `kind` on `vals` (constants, `Sym`s or None for unknown
    operands), `types` the operand types then the result types; None when it
    does not fold.  At least one operand must be symbolic (or, for Shape/Size,
    have a symbolic type): constant-only ops are the constant folder's."""
    rule = _RULES.get(kind)
    if rule is None:
        return None
    if kind not in ("Shape", "Size") and not any(isinstance(v, Sym) for v in vals):
        return None
    if kind == "Equal" and not isinstance(vals[0], Sym):
        return None
    try:
        return rule(attrs, list(vals), list(types))
    except (IndexError, KeyError, TypeError, ValueError):
        return None
