"""Attention (``fused.attention``): ``softmax(q·kᵀ·scale + mask)·v`` as one Cube op,
grouped-query heads reading the un-repeated K/V.

    %o = fused.attention(%q, %k, %v, %mask) {nan_guard = 1, scale = 0.25}
       : (tensor<Bx4xSx16xf32>, tensor<Bx2xLx16xf32>, tensor<Bx2xLx16xf32>, tensor<Bx1xSxLxf32>) -> tensor<Bx4xSx16xf32>

- ``q: [B, Hq, S, D]``, ``k: [B, Hkv, L, D]``, ``v: [B, Hkv, L, Dv]``, result
  ``[B, Hq, S, Dv]``.  ``Hq`` is a multiple of ``Hkv``: query head ``h`` reads KV
  head ``h // (Hq / Hkv)``, the order of transformers' ``repeat_kv``
  (Unsqueeze → Expand → Reshape), which is never materialized.
- ``mask`` (optional): additive, broadcastable to the scores ``[B, Hq, S, L]``.
- ``causal = 1`` also masks key ``j > i + L - S`` for query ``i`` (the causal
  triangle aligned to the last key, as with a KV cache); exports that build the
  triangle as a tensor keep it in ``mask``.
- ``nan_guard = 1``: a row whose scores are all ``-inf`` (fully masked) gives 0,
  as the exports' ``Where(IsNaN(p), 0, p)`` after the Softmax; ``0``: NaN, as
  ONNX's Softmax.

The Cube runs the two products (``S x D x L`` for q·kᵀ and ``S x L x D`` for p·v)
and the Vector the row softmax between them, over the scores' elements.  The
GEMM view is the first product with the batch doubled: both products have the
same MACs and, on the Cube's cubic 16x16x16 fp16 fractal, the same padded
fractal count.  `AttentionGemm.vector_shape` is the softmax's extent, which the
cost model charges to the Vector (`passes.target.cost`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ir.core import Op
from ir.gemm import Dim, Gemm
from ir.ops._infer import operand_type
from ir.registry import CUBE_OR_VECTOR, VECTOR_ONLY, Attr, TypeInferenceError, define
from ir.symbolic import dim_prod
from ir.types import DType, TensorType

__all__ = ["AttentionGemm", "attention_gemm"]


@dataclass(frozen=True)
class AttentionGemm(Gemm):
    """A Cube op's GEMMs plus the Vector work between them: a row softmax over
    ``vector_shape`` elements."""

    vector_shape: tuple[Dim, ...] = ()


def _mask_ok(mask: tuple[Dim, ...], scores: tuple[Dim, ...]) -> bool:
    """`mask` broadcasts to `scores` without enlarging it (symbols trusted)."""
    if len(mask) > len(scores):
        return False
    return all(m == 1 or m == s or not (isinstance(m, int) and isinstance(s, int))
               for m, s in zip(mask, scores[len(scores) - len(mask):]))


def _attention(op: Op) -> list[TensorType]:
    q, k, v = (operand_type(op, i) for i in range(3))
    if q.rank != 4 or k.rank != 4 or v.rank != 4:
        raise TypeInferenceError(f"fused.attention: q, k, v must be rank 4, got {q}, {k}, {v}")
    if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_float:
        raise TypeInferenceError(f"fused.attention: q, k, v must share a float dtype, got {q}, {k}, {v}")
    b, hq, s, d = q.shape
    if k.shape[0] != b or v.shape[0] != b or k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2] or k.shape[3] != d:
        raise TypeInferenceError(f"fused.attention: k {k} and v {v} do not fit q {q}")
    hkv = k.shape[1]
    if isinstance(hq, int) and isinstance(hkv, int) and (hkv == 0 or hq % hkv):
        raise TypeInferenceError(f"fused.attention: {hq} query heads are not a multiple of {hkv} KV heads")
    if len(op.operands) > 3 and op.operands[3] is not None:
        m = op.operands[3].type
        if m.dtype != q.dtype or not _mask_ok(m.shape, (b, hq, s, k.shape[2])):
            raise TypeInferenceError(f"fused.attention: mask {m} does not broadcast to the scores of {q} and {k}")
    return [TensorType(q.dtype, (b, hq, s, v.shape[3]))]


def attention_gemm(op: Op) -> Gemm | None:
    """q·kᵀ (``S x D x L`` per query head) with the batch doubled for p·v; the
    softmax over ``[B, Hq, S, L]`` as Vector work."""
    if len(op.operands) < 3 or any(x is None for x in op.operands[:3]):
        return None
    q, k = op.operands[0].type, op.operands[1].type  # type: ignore[union-attr]
    if q.rank != 4 or k.rank != 4:
        return None
    b, hq, s, d = q.shape
    length = k.shape[2]
    return AttentionGemm("matmul", dim_prod([b, hq, 2]), s, d, length, q.dtype, vector_shape=(b, hq, s, length))


define("fused.attention", operands=(3, 4), infer=_attention, engines=CUBE_OR_VECTOR, gemm=attention_gemm,
       attrs={"scale": Attr("float", 1.0), "causal": Attr("int", 0), "nan_guard": Attr("int", 0)},
       origin="MatMul", label="attention",
       doc="softmax(q·kᵀ·scale + mask [+ causal]) · v, GQA heads sharing K/V (see `ir.ops.attention`).")


def _causal_mask(op: Op) -> list[TensorType]:
    m, pos = operand_type(op, 0), operand_type(op, 1)
    if m.rank != 2 or pos.rank != 1 or not pos.dtype.is_int:
        raise TypeInferenceError(f"fused.causal_mask: expects a [B, T] mask and [S] int positions, got {m}, {pos}")
    dtype = DType(op.attrs.get("dtype", "bool"))
    return [TensorType(dtype, (m.shape[0], 1, pos.shape[0], m.shape[1]))]


define("fused.causal_mask", operands=2, infer=_causal_mask, engines=VECTOR_ONLY,
       attrs={"dtype": Attr("str", "bool"), "masked": Attr("float", float("-inf"))},
       label="causal mask",
       doc="The causal + padding mask of a decoder: ``keep[b, 0, i, j] = j <= positions[i] and mask[b, j] != 0`` "
           "for mask [B, T] and the queries' positions [S]; bool, or with a float dtype 0 where kept and "
           "`masked` elsewhere (an additive mask).")
