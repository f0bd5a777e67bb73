"""kv-cache: give each layer's KV cache to the executable, stored as asked.

An exported decoder takes the cache as inputs (``past_key_values.N.key``) and
returns it grown by the new tokens (``present.N.key = Concat(past, new)`` along
the sequence axis).  This pass turns each such Concat into ``kv.append`` when
its sequence dim is bounded (``--dim_range``): codegen then gives the result a
buffer of its own, ``[batch, heads, max_len, head_dim]`` at the bounds, that
lives across runs, and the kernel writes only the new positions when the past
it is fed is that buffer's prefix — onnxruntime-genai's
``past_present_share_buffer``, decided by the compiler.  The past/present
interface is unchanged for callers of ``Session.run``.

    %present.0.key = Concat(%past_key_values.0.key, %k) {axis = -2}
        : (tensor<1x2x"P"x16xf32>, tensor<1x2x"S"x16xf32>) -> tensor<1x2x"P + S"x16xf32>
    // kv-cache ==>
    %present.0.key = kv.append(%past_key_values.0.key, %k) {axis = 2} : (...) -> tensor<1x2x"P + S"x16xf32>

Legal when: the Concat has two operands, the first is a graph input (the past)
whose dim on the axis is symbolic, the result's dim on the axis has a bound, and
the past has no other use (it is read through the cache).

Compression (``--kv_cache_dtype=fp16|int8``; the pass option ``dtype`` wins over
``ctx.options.kv_cache_dtype``): the K and V caches an attention reads are
stored in float16, or in int8 with one f32 scale per (batch, head, token), and
the attention becomes ``kv.attention``, which widens them tile by tile:

    %o = fused.attention(%q, %present.0.key, %present.0.value, %mask) {scale = 0.25}
    // kv-cache{dtype=int8} ==>
    %present.0.key, %present.0.key.i8, %present.0.key.scale = kv.append(%past_key_values.0.key, %k) {axis = 2, dtype = "i8"}
    %present.0.value, %present.0.value.i8, %present.0.value.scale = kv.append(...) {axis = 2, dtype = "i8"}
    %o = kv.attention(%q, %present.0.key.i8, %present.0.value.i8, %mask, %present.0.key.scale, %present.0.value.scale)

The presents stay graph outputs in the model's dtype (the Session computes one
only when it is read).  A cache is compressed only when every op reading it is
an attention whose K and V are both compressed; the others stay in the model's
dtype (``kv_cache.kept``, with a diagnostic).

Statistics: ``kv_cache.layers`` (buffers made), ``kv_cache.compressed``, ``kv_cache.kept``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ir.core import Graph, Op
from ir.symbolic import dim_bound, parse_ranges
from ir.types import DType
from passes._rewrite import Rewriter, RuleTable, replace_op, rewrite
from passes.base import Pass, PassContext, PassError, register

__all__ = ["STORAGE", "KvCache", "compress_caches", "kv_cache_summary", "storage_dtype"]

# --kv_cache_dtype spellings -> the dtype the cache is stored in (None: the model's)
STORAGE: dict[str, DType | None] = {"": None, "fp32": None, "f32": None, "fp16": DType.f16, "f16": DType.f16,
                                    "int8": DType.i8, "i8": DType.i8}


def storage_dtype(name: str | None) -> DType | None:
    """The storage dtype `name` (``--kv_cache_dtype``) asks for; None: the model's."""
    if (name or "") not in STORAGE:
        raise PassError(f"kv-cache: unknown cache dtype {name!r}; choose fp16 or int8 (or fp32: the model's)")
    return STORAGE[name or ""]


def to_kv_append(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    if len(op.operands) != 2 or any(v is None for v in op.operands):
        return False
    past, new = op.operands
    inputs = {id(v) for v in rw.graph.inputs}
    axis = int(op.attrs["axis"]) % max(past.type.rank, 1)
    ranges = parse_ranges(rw.graph.attrs.get("dim_ranges"))
    if (id(past) not in inputs or isinstance(past.type.shape[axis], int) or len(past.uses) != 1
            or dim_bound(op.result.type.shape[axis], ranges) is None):
        return False
    if not rw.replace_with(op, "kv.append", [past, new], {"axis": axis, **{k: v for k, v in op.attrs.items()
                                                                           if k == "name"}}):
        return False
    ctx.count("kv_cache", "layers")
    return True


def _cache_of(op: Op | None, storage: DType) -> bool:
    """`op` is a float kv.append every reader of which takes it as an attention's K or V."""
    if op is None or op.kind != "kv.append" or op.attrs.get("dtype"):
        return False
    t = op.result.type
    if not t.dtype.is_float or t.dtype == storage or (storage is DType.i8 and int(op.attrs["axis"]) == t.rank - 1):
        return False
    return all(u.op.kind == "fused.attention" and u.index in (1, 2) for u in op.result.uses)


def _to_compress(graph: Graph, storage: DType) -> list[Op]:
    """The caches to store as `storage`: those whose every attention can read both K and V compressed."""
    chosen = {id(op): op for op in graph.ops if _cache_of(op, storage)}
    changed = True
    while changed:  # drop a cache one of whose attentions reads a cache that stays float
        changed = False
        for key, op in list(chosen.items()):
            if any(id(u.op.operands[3 - u.index].producer) not in chosen for u in op.result.uses):
                del chosen[key]
                changed = True
    return list(chosen.values())


def _compress(graph: Graph, op: Op, storage: DType) -> Op:
    """`op` again with its cache stored as `storage`; result 0 (the present) keeps its name."""
    name = op.result.name
    names = [name, f"{name}.{storage.value}"] + ([f"{name}.scale"] if storage is DType.i8 else [])
    new = graph.add_op("kv.append", list(op.operands), {**op.attrs, "dtype": storage.value}, names=names, before=op)
    replace_op(graph, op, [new.results[0]], inherit_names=True)
    return new


def _read_compressed(graph: Graph, att: Op) -> None:
    """fused.attention over compressed K and V caches into kv.attention."""
    k, v = (x.producer for x in att.operands[1:3])
    mask = att.operands[3] if len(att.operands) > 3 else None
    operands = [att.operands[0], k.results[1], v.results[1], mask]  # type: ignore[union-attr]
    if len(k.results) > 2:  # type: ignore[union-attr]
        operands += [k.results[2], v.results[2]]  # type: ignore[union-attr]
    elif mask is None:
        operands.pop()
    new = graph.add_op("kv.attention", operands, dict(att.attrs), before=att)
    replace_op(graph, att, [new.result], inherit_names=True)


def compress_caches(graph: Graph, storage: DType | None, ctx: PassContext) -> bool:
    """Store the caches attention reads as `storage` (see the module doc); True if any changed."""
    if storage is None:
        return False
    caches = _to_compress(graph, storage)
    kept = sum(1 for op in graph.ops if op.kind == "kv.append" and not op.attrs.get("dtype")
               and op.result.type.dtype != storage) - len(caches)
    if kept:
        ctx.count("kv_cache", "kept", kept)
        ctx.diagnostics.append(f"kv-cache: {kept} KV cache(s) stay in the model's dtype: read by something "
                               f"other than a fused attention over K and V caches that can both be {storage.value}")
    readers = {id(u.op): u.op for op in caches for u in op.result.uses}
    for op in caches:
        _compress(graph, op, storage)
        ctx.count("kv_cache", "compressed")
    for att in readers.values():
        _read_compressed(graph, att)
    return bool(caches)


def _stored(op: Op) -> list:
    """The results of a kv.append that the executable keeps: the cache (and scales) as stored."""
    return list(op.results[1:]) if op.attrs.get("dtype") else [op.result]


def kv_cache_summary(graph: Graph) -> dict[str, int]:
    """The KV caches' memory at the bounds, as stored (int8 and its scales, f16, or
    the model's dtype): total bytes, bytes per token (every layer's K and V at the
    batch bound) and the longest sequence they hold; {} without a cache."""
    ranges = parse_ranges(graph.attrs.get("dim_ranges"))
    total = per_token = max_len = 0
    for op in graph.ops:
        if op.kind != "kv.append":
            continue
        axis = int(op.attrs["axis"])
        for r in _stored(op):
            dims = [dim_bound(d, ranges) for d in r.type.shape]
            if any(d is None for d in dims):
                continue
            row = r.type.dtype.itemsize * int(math.prod(d for i, d in enumerate(dims) if i != axis))
            total += row * dims[axis]
            per_token += row
            max_len = max(max_len, dims[axis])
    return {"kv_cache_bytes": total, "kv_cache_bytes_per_token": per_token, "kv_cache_max_len": max_len} \
        if total else {}


RULES: RuleTable = {"Concat": [to_kv_append]}


@register
@dataclass
class KvCache(Pass):
    """Concat(past, new) into an executable-owned KV cache, stored as `dtype` (see module doc).

    ``dtype``: fp16 | int8 | fp32 (the model's); empty: ``ctx.options.kv_cache_dtype``."""

    name: ClassVar[str] = "kv-cache"
    dtype: str = ""

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        storage = storage_dtype(self.dtype or ctx.options.kv_cache_dtype)
        changed = rewrite(graph, RULES, ctx)
        return compress_caches(graph, storage, ctx) or changed
