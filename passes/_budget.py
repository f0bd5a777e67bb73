"""The memory budget of a plan, and a check of it made before any weight is read.

assign-buffers checks weights + arena + KV cache against the budget (the SoC's
DDR, or ``mem_limit`` when smaller) once everything is planned.  By then a 7B
model's 13 GB of weights have been concatenated (fuse-siblings) and quantized:
a plan that cannot fit would read them all only to be refused.  `check_early`
refuses it first, from sizes alone: the weights as they will be stored (the
weight-only quantization of ``quant_type``, fp16 for the fp16 precision modes,
int8 for ``allow_quantize``) plus the KV cache at its bounds (as the kv-cache pass
stores it) -- a lower bound of what the final plan needs, so a plan
that would fit is never refused.

    check_early(graph, ctx)   # MemoryBudgetError: "before reading any weight: weights at least
                              #   6.2 GiB (...) as W8A16 + KV cache 2.0 GiB (...) = ... exceeds 8.0 GiB, the DDR of ..."
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ir.core import Graph, Op
from ir.errors import MemoryBudgetError
from passes.base import PassContext
from passes.kv_cache import kv_cache_summary

__all__ = ["budget", "check_early", "kv_lower_bound", "weights_lower_bound"]

_FP16_MODES = ("force_fp16", "allow_fp32_to_fp16")
_BITS = {"W8A16": 8, "W4A16": 4}


def budget(soc: Any, mem_limit: int | None) -> tuple[int, str] | None:
    """The smallest memory limit that applies (the SoC's DDR, ``mem_limit``), and what
    it is; None without one."""
    limits: list[tuple[int, str]] = []
    ddr = getattr(soc, "ddr_bytes", None)
    if isinstance(ddr, int) and ddr > 0:
        limits.append((ddr, f"the DDR of {getattr(soc, 'name', 'the SoC')}"))
    if mem_limit is not None:
        limits.append((int(mem_limit), "mem_limit"))
    return min(limits) if limits else None


def _kn(op: Op, index: int) -> tuple[int, int] | None:
    """(K, N) of the weight operand `index` of `op` as quantize-weights stores it: a
    MatMul's 2-D weight [K, N], or an embedding table [N, K] a Gather reads rows of."""
    w = op.operands[index] if index < len(op.operands) else None
    if w is None or w.type.rank != 2 or not all(isinstance(d, int) for d in w.type.shape):
        return None
    a, b = w.type.shape
    if op.kind in ("MatMul", "fused.matmul_add") and index == 1:
        return a, b
    if op.kind == "Gather" and index == 0 and int(op.attrs.get("axis", 0)) == 0:
        return b, a
    return None


def _quantized_bytes(k: int, n: int, bits: int, group: int, symmetric: bool) -> int:
    """Packed codes [G, g·bits/8, N] and float32 scales (and zero points) [G, N]."""
    g = min(group, k + k % 2)
    groups = -(-k // g)
    return groups * (g * bits // 8) * n + groups * n * 4 * (1 if symmetric else 2)


def weights_lower_bound(graph: Graph, options: Any) -> int:
    """Bytes the constants will take at least once the pipeline has stored them as
    `options` ask (see module doc), from their shapes alone."""
    bits, group = _BITS.get(options.quant_type or ""), int(options.weight_group_size)
    total = 0
    for op in graph.ops:
        if op.kind != "const":
            continue
        a: np.ndarray = op.attrs["value"]
        if a.dtype == object or a.dtype.kind != "f":
            total += int(a.nbytes)
            continue
        per = a.dtype.itemsize
        if options.precision_mode in _FP16_MODES:
            per = min(per, 2)
        elif options.precision_mode == "allow_quantize":
            per = 1
        least = int(a.size) * per
        if bits is not None:
            for u in op.result.uses:
                kn = _kn(u.op, u.index)
                if kn is not None:
                    least = min(least, _quantized_bytes(*kn, bits, group, bool(options.weight_symmetric)))
        total += least
    return total


def kv_lower_bound(graph: Graph) -> int:
    """The KV caches at their bounds as the kv-cache pass stored them (int8 and its
    scales, fp16, or the model's dtype); 0 before that pass."""
    return int(kv_cache_summary(graph).get("kv_cache_bytes", 0))


def check_early(graph: Graph, ctx: PassContext) -> None:
    """`MemoryBudgetError` when the plan's weights and KV cache alone exceed the budget."""
    from passes.assign_buffers import format_bytes

    limit = budget(ctx.soc, ctx.options.mem_limit)
    if limit is None:
        return
    weights, kv = weights_lower_bound(graph, ctx.options), kv_lower_bound(graph)
    if weights + kv <= limit[0]:
        return
    o = ctx.options
    how = o.quant_type or ("INT8" if o.precision_mode == "allow_quantize" else
                           "fp16" if o.precision_mode in _FP16_MODES else "in the model's dtypes")
    parts = f"weights stored {'' if how.startswith('in ') else 'as '}{how} at least {format_bytes(weights)}"
    if kv:
        parts += f" + KV cache at the bounds {format_bytes(kv)}"
    raise MemoryBudgetError(f"before reading any weight: {parts} = {format_bytes(weights + kv)} exceeds "
                            f"{format_bytes(limit[0])}, {limit[1]}; the activations come on top")
