"""The GEMM view of a Cube op: the ``batch`` products ``[M, K] x [K, N]`` it performs.

Each Cube op's declaration names its view (``define(..., gemm=conv_gemm)``); the
cost model, placement and tiling read it through `gemm_dims`, so a new Cube op
says once how it maps onto the Cube:

    %y = Conv(%x, %w) {pads = [1, 1, 1, 1]} : (tensor<1x64x56x56xf32>, tensor<64x64x3x3xf32>) -> tensor<1x64x56x56xf32>
    gemm_dims(op) == Gemm("conv", batch=1, m=3136, k=576, n=64, dtype=f32)

Symbolic dims stay symbolic (``"N*3136"``); the cost model counts them as 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ir.types import DType, TensorType

if TYPE_CHECKING:
    from ir.core import Op

__all__ = ["Dim", "Gemm", "conv_gemm", "conv_transpose_gemm", "dim_value", "gemm_op_gemm", "matmul_gemm"]

Dim = int | str


def _prod(dims: list[Dim]) -> Dim:
    """Product of dims; symbolic factors keep the result symbolic (``"N*3136"``)."""
    p = 1
    syms: list[str] = []
    for d in dims:
        if isinstance(d, int):
            p *= d
        else:
            syms.append(str(d))
    if not syms:
        return p
    return "*".join(syms + ([str(p)] if p != 1 else []))


def dim_value(d: Dim) -> int:
    """A dim as a number for cost purposes: symbols count as 1."""
    if isinstance(d, int):
        return d
    return math.prod(int(t) for t in str(d).split("*") if t.isdigit())


def _div(d: Dim, g: int) -> Dim:
    return d // g if isinstance(d, int) else (d if g == 1 else f"{d}/{g}")


@dataclass(frozen=True)
class Gemm:
    """A Cube op seen as ``batch`` GEMMs of ``[m, k] x [k, n]``."""

    kind: str  # "matmul" | "conv" | "conv_transpose"
    batch: Dim
    m: Dim
    k: Dim
    n: Dim
    dtype: DType  # the input (operand 0) element type

    @property
    def dims(self) -> tuple[Dim, Dim, Dim]:
        return self.m, self.k, self.n

    @property
    def label(self) -> str:
        return "x".join(str(d) for d in (self.m, self.k, self.n))

    @property
    def macs(self) -> int:
        return dim_value(self.batch) * dim_value(self.m) * dim_value(self.k) * dim_value(self.n)


def _operand_types(op: Op) -> tuple[TensorType, TensorType] | None:
    if len(op.operands) < 2 or not op.results:
        return None
    a, b = op.operands[0], op.operands[1]
    return None if a is None or b is None else (a.type, b.type)


def _broadcast_batch(x: list[Dim], y: list[Dim]) -> list[Dim]:
    n = max(len(x), len(y))
    x = [1] * (n - len(x)) + x
    y = [1] * (n - len(y)) + y
    return [b if a == 1 else a for a, b in zip(x, y)]


def matmul_gemm(op: Op) -> Gemm | None:
    """MatMul-like: ``a: [..., M, K]``, ``b: [..., K, N]`` (1-D operands promoted as numpy does)."""
    ts = _operand_types(op)
    if ts is None:
        return None
    a, b = ts
    sa, sb = list(a.shape), list(b.shape)
    if not sa or not sb:
        return None
    if len(sa) == 1:
        sa = [1] + sa
    if len(sb) == 1:
        sb = sb + [1]
    batch = _broadcast_batch(sa[:-2], sb[:-2])
    return Gemm("matmul", _prod(batch), sa[-2], sa[-1], sb[-1], a.dtype)


def gemm_op_gemm(op: Op) -> Gemm | None:
    """ONNX Gemm: 2-D operands, ``transA``/``transB`` honoured."""
    ts = _operand_types(op)
    if ts is None:
        return None
    a, b = ts
    sa, sb = list(a.shape), list(b.shape)
    if len(sa) != 2 or len(sb) != 2:
        return None
    m, k = (sa[1], sa[0]) if op.attrs.get("transA") else (sa[0], sa[1])
    n = sb[0] if op.attrs.get("transB") else sb[1]
    return Gemm("matmul", 1, m, k, n, a.dtype)


def conv_gemm(op: Op) -> Gemm | None:
    """Conv as implicit GEMM: ``M = N*OH*OW, K = C/g*KH*KW, N = OC/g``, batch = groups."""
    ts = _operand_types(op)
    if ts is None:
        return None
    a, b = ts
    group = int(op.attrs.get("group", 1) or 1)
    x, w, y = a.shape, b.shape, op.results[0].type.shape
    if len(x) < 3 or len(w) < 3 or len(y) < 3:
        return None
    return Gemm("conv", group, _prod([y[0], *y[2:]]), _prod(list(w[1:])), _div(w[0], group), a.dtype)


def conv_transpose_gemm(op: Op) -> Gemm | None:
    """ConvTranspose: ``M = N*H*W, K = C/g, N = OC/g*KH*KW`` (col2im after)."""
    ts = _operand_types(op)
    if ts is None:
        return None
    a, b = ts
    group = int(op.attrs.get("group", 1) or 1)
    x, w = a.shape, b.shape
    if len(x) < 3 or len(w) < 3:
        return None
    return Gemm("conv_transpose", group, _prod([x[0], *x[2:]]), _div(x[1], group), _prod([w[1], *w[2:]]), a.dtype)
