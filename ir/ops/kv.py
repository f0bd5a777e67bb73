"""The KV cache: ``kv.append`` is a Concat along the sequence axis whose result
the executable owns; ``kv.attention`` is attention reading a compressed cache.

The ``kv-cache`` pass turns each layer's ``past -> Concat(sequence axis) -> present``
into ``kv.append``.  Its meaning is Concat's, so every caller gets the same
values; codegen gives its result a buffer of its own, ``[batch, heads, max_len,
head_dim]`` at the bounds, that lives across runs.  The kernel writes only the
new positions when ``past`` already is that buffer's prefix (the generator feeds
each step's ``present`` back as the next ``past``, a view, not a copy); otherwise
it copies ``past`` in first.

    %present = Concat(%past, %new) {axis = -2} : (tensor<1x2x"P"x16xf32>, tensor<1x2x"S"x16xf32>) -> tensor<1x2x"P + S"x16xf32>
    // kv-cache ==>
    %present = kv.append(%past, %new) {axis = 2} : (tensor<1x2x"P"x16xf32>, tensor<1x2x"S"x16xf32>) -> tensor<1x2x"P + S"x16xf32>

A compressed cache (``--kv_cache_dtype``) sets ``dtype``: the op then has the
stored cache as extra results — ``f16``: the cache in float16; ``i8``: the cache
in int8 and one f32 scale per row along the last axis (per batch, head and
token: ``scale = amax(|x|) / 127``, ``q = round(x / scale)``).  Result 0 stays
the present in the model's dtype, now the stored cache read back (``q * scale``);
codegen lets the Session compute it only when the caller reads that output, and
attention reads the stored results through ``kv.attention``:

    %present, %present.i8, %present.scale = kv.append(%past, %new) {axis = 2, dtype = "i8"}
        : (tensor<1x2x"P"x16xf32>, tensor<1x2x"S"x16xf32>)
        -> (tensor<1x2x"P + S"x16xf32>, tensor<1x2x"P + S"x16xi8>, tensor<1x2x"P + S"xf32>)
    %o = kv.attention(%q, %k.i8, %v.i8, %mask, %k.scale, %v.scale) {nan_guard = 1, scale = 0.25}
        : (tensor<1x4x"S"x16xf32>, tensor<1x2x"L"x16xi8>, tensor<1x2x"L"x16xi8>, tensor<1x1x"S"x"L"xf32>,
           tensor<1x2x"L"xf32>, tensor<1x2x"L"xf32>) -> tensor<1x4x"S"x16xf32>
"""

from __future__ import annotations

from ir.core import Op
from ir.ops._infer import norm_axis, operand_type
from ir.ops.attention import attention_gemm
from ir.registry import APPENDS, CUBE_OR_VECTOR, VECTOR_ONLY, Attr, TypeInferenceError, define
from ir.symbolic import dim_add
from ir.types import DType, TensorType

__all__ = ["KV_STORAGE"]

KV_STORAGE = (DType.f16, DType.i8)  # the dtypes a compressed cache is stored in


def _append(op: Op) -> list[TensorType]:
    past, new = operand_type(op, 0), operand_type(op, 1)
    a = norm_axis(op.attrs["axis"], past.rank, op)
    if past.rank != new.rank or past.dtype != new.dtype:
        raise TypeInferenceError(f"kv.append: {past} and {new} differ in rank or dtype")
    present = past.with_shape(past.shape[:a] + (dim_add(past.shape[a], new.shape[a]),) + past.shape[a + 1:])
    dtype = op.attrs.get("dtype")
    if not dtype:
        return [present]
    stored = DType(dtype)
    if stored not in KV_STORAGE or not past.dtype.is_float or past.dtype == stored:
        raise TypeInferenceError(f"kv.append: cannot store a {past.dtype.value} cache as {dtype}")
    if stored is DType.f16:
        return [present, present.with_dtype(stored)]
    if a == past.rank - 1:
        raise TypeInferenceError("kv.append: an i8 cache has one scale per row of its last axis, "
                                 f"which must not be the sequence axis {a}")
    return [present, present.with_dtype(stored), TensorType(DType.f32, present.shape[:-1])]


define("kv.append", operands=2, infer=_append, engines=VECTOR_ONLY, traits={APPENDS},
       attrs={"axis": Attr("int", required=True), "dtype": Attr("str")},
       doc="%present = kv.append(%past, %new) {axis = 2}: Concat into a cache the executable owns; "
           "dtype = \"f16\" | \"i8\": also the stored cache (and its per-row scales) as results 1 (and 2)")


def _kv_attention(op: Op) -> list[TensorType]:
    q, k, v = (operand_type(op, i) for i in range(3))
    if q.rank != 4 or k.rank != 4 or v.rank != 4 or not q.dtype.is_float:
        raise TypeInferenceError(f"kv.attention: q, k, v must be rank 4 and q float, got {q}, {k}, {v}")
    if k.dtype != v.dtype or k.dtype not in KV_STORAGE:
        raise TypeInferenceError(f"kv.attention: k and v must both be stored as f16 or i8, got {k}, {v}")
    b, hq, s, d = q.shape
    if k.shape[0] != b or v.shape[0] != b or k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2] or k.shape[3] != d:
        raise TypeInferenceError(f"kv.attention: k {k} and v {v} do not fit q {q}")
    hkv, length = k.shape[1], k.shape[2]
    if isinstance(hq, int) and isinstance(hkv, int) and (hkv == 0 or hq % hkv):
        raise TypeInferenceError(f"kv.attention: {hq} query heads are not a multiple of {hkv} KV heads")
    mask = op.operands[3] if len(op.operands) > 3 else None
    if mask is not None and (mask.type.dtype != q.dtype or mask.type.rank > 4):
        raise TypeInferenceError(f"kv.attention: mask {mask.type} is not an additive mask for {q}")
    scales = [x for x in op.operands[4:] if x is not None]
    if (k.dtype is DType.i8) != (len(op.operands) == 6 and len(scales) == 2):
        raise TypeInferenceError(f"kv.attention: an i8 cache takes a scale operand each for k and v (after the "
                                 f"mask, which may be none), an f16 one none; got {len(scales)} for {k.dtype.value}")
    for x in scales:
        if not x.type.dtype.is_float or tuple(x.type.shape) != (b, hkv, length):
            raise TypeInferenceError(f"kv.attention: scale {x.type} is not one float per (batch, head, key) of {k}")
    return [TensorType(q.dtype, (b, hq, s, v.shape[3]))]


define("kv.attention", operands=(3, 6), infer=_kv_attention, engines=CUBE_OR_VECTOR, gemm=attention_gemm,
       attrs={"scale": Attr("float", 1.0), "causal": Attr("int", 0), "nan_guard": Attr("int", 0)},
       origin="MatMul", label="attention",
       doc="fused.attention over a compressed KV cache: %o = kv.attention(%q, %k, %v, %mask, %k_scale, %v_scale); "
           "k/v in f16 (no scales) or i8 with one scale per (batch, head, key), widened tile by tile in the kernel")
