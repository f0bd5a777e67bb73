"""Shape helpers shared by the op declarations' type-inference functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ir.core import Op
from ir.geometry import window_out
from ir.registry import TypeInferenceError
from ir.types import Dim, DType, TensorType

__all__ = [
    "broadcast",
    "broadcast_all",
    "const_operand",
    "conv_out_dim",
    "flag",
    "norm_axis",
    "operand_type",
    "same_as",
    "same_with_axis",
    "trusted",
    "with_dtype_of",
]


def operand_type(op: Op, i: int) -> TensorType:
    v = op.operands[i] if i < len(op.operands) else None
    if v is None:
        raise TypeInferenceError(f"{op.kind}: operand {i} is required")
    return v.type


def broadcast(shapes: Sequence[Sequence[Dim]]) -> tuple[Dim, ...]:
    """Numpy/ONNX multidirectional broadcasting, symbols kept when they agree."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        known = {d for d in dims if d != 1}
        if not known:
            out.append(1)
        elif len(known) == 1:
            out.append(known.pop())
        else:
            ints = {d for d in known if isinstance(d, int)}
            if len(ints) > 1:
                raise TypeInferenceError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
            out.append(ints.pop() if ints else "?")
    return tuple(out)


def same_as(i: int = 0):
    def infer(op: Op) -> list[TensorType]:
        return [operand_type(op, i)]

    return infer


def same_with_axis(i: int = 0):
    """Operand `i`'s type, once the ``axis`` attribute is checked to lie in [-rank, rank-1]
    (Softmax's family: ONNX's inference lets ``axis = 2**40`` through)."""

    def infer(op: Op) -> list[TensorType]:
        t = operand_type(op, i)
        norm_axis(int(op.attrs.get("axis", -1)), t.rank, op)
        return [t]

    return infer


def broadcast_all(dtype: DType | None = None, first: int = 0, last: int | None = None):
    """Elementwise result: broadcast of operands[first:last], dtype of the first (or `dtype`)."""

    def infer(op: Op) -> list[TensorType]:
        ts = [v.type for v in op.operands[first:last] if v is not None]
        if not ts:
            raise TypeInferenceError(f"{op.kind} has no operands")
        return [TensorType(dtype or ts[0].dtype, broadcast([t.shape for t in ts]))]

    return infer


def with_dtype_of(i: int, dtype: DType):
    def infer(op: Op) -> list[TensorType]:
        return [operand_type(op, i).with_dtype(dtype)]

    return infer


def norm_axis(axis: int, rank: int, op: Op | None = None) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < max(rank, 1):
        raise TypeInferenceError(f"{op.kind if op else ''}: axis {axis} out of range for rank {rank}")
    return a


def flag(op: Op, name: str, default: int) -> bool:
    """A 0/1 attribute (``keepdims``): ONNX defines no other value, and its shape inference
    and onnxruntime's optimizer read e.g. ``keepdims = 3`` differently."""
    v = op.attrs.get(name, default)
    if v not in (0, 1):
        raise TypeInferenceError(f"{op.kind}: {name} must be 0 or 1, got {v!r}")
    return bool(v)


def const_operand(op: Op, i: int) -> np.ndarray | None:
    return op.operand_const(i)


def trusted(op: Op, why: str) -> list[TensorType]:
    """Result types that depend on runtime values: keep what the op already says."""
    if op.results:
        return [r.type for r in op.results]
    raise TypeInferenceError(f"{op.kind}: {why}; result types must be given")


def conv_out_dim(size: Dim, k: int, stride: int, dil: int, pad_begin: int, pad_end: int, ceil: bool = False) -> Dim:
    """Windows along one axis; a window that does not fit the padded input (or a
    stride/dilation below 1, a negative pad) is a `TypeInferenceError`, never a
    negative or empty dim."""
    if stride < 1 or dil < 1 or k < 1:
        raise TypeInferenceError(f"kernel {k}, stride {stride}, dilation {dil}: each must be at least 1")
    if pad_begin < 0 or pad_end < 0:
        raise TypeInferenceError(f"negative pads ({pad_begin}, {pad_end})")
    if not isinstance(size, int):
        return "?"
    out = window_out(size, k, stride, dil, pad_begin, pad_end, ceil)
    if out < 1:
        raise TypeInferenceError(f"a window of {k} (dilation {dil}) does not fit the padded input "
                                 f"({size} + {pad_begin} + {pad_end})")
    return out
