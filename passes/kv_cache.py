"""kv-cache: give each layer's KV cache to the executable.

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

Statistics: ``kv_cache.layers`` (buffers made).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ir.core import Graph, Op
from ir.symbolic import dim_bound, parse_ranges
from passes._rewrite import Rewriter, RuleTable, rewrite
from passes.base import Pass, PassContext, register

__all__ = ["KvCache", "kv_cache_summary"]


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


def kv_cache_summary(graph: Graph) -> dict[str, int]:
    """The KV caches' memory at the bounds: total bytes, bytes per token (every
    layer's K and V at the batch bound) and the longest sequence they hold; {}
    without a cache."""
    ranges = parse_ranges(graph.attrs.get("dim_ranges"))
    total = per_token = max_len = 0
    for op in graph.ops:
        if op.kind != "kv.append":
            continue
        t = op.result.type
        axis = int(op.attrs["axis"])
        dims = [dim_bound(d, ranges) for d in t.shape]
        if any(d is None for d in dims):
            continue
        row = t.dtype.itemsize * int(math.prod(d for i, d in enumerate(dims) if i != axis))
        total += row * dims[axis]
        per_token += row
        max_len = max(max_len, dims[axis])
    return {"kv_cache_bytes": total, "kv_cache_bytes_per_token": per_token, "kv_cache_max_len": max_len} \
        if total else {}


RULES: RuleTable = {"Concat": [to_kv_append]}


@register
@dataclass
class KvCache(Pass):
    """Concat(past, new) into an executable-owned KV cache (see module doc)."""

    name: ClassVar[str] = "kv-cache"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        return rewrite(graph, RULES, ctx)
