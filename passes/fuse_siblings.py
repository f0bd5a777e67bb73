"""fuse-siblings: MatMuls that read the same activation with constant weights become one.

A transformer layer projects one normalized activation three times (q, k, v) and
its MLP twice (gate, up).  In a decode step each projection is a matrix-vector
product that streams its weight from memory once, and small streams run well
below the memory's bandwidth (a 512x256 weight moves at about half the rate of a
512x8192 one).  Concatenating the weights along N makes one longer stream; a
Split along the last axis hands each user its part.  TensorRT and TVM call this
horizontal fusion; it changes no arithmetic (each output column is the same dot
product), so results are bit-identical.

    %q = MatMul(%x, %wq) : (tensor<1x"S"x64xf32>, tensor<64x64xf32>) -> tensor<1x"S"x64xf32>
    %k = MatMul(%x, %wk) : (tensor<1x"S"x64xf32>, tensor<64x32xf32>) -> tensor<1x"S"x32xf32>
    // fuse-siblings ==>
    %qk = MatMul(%x, %wq_wk) : (tensor<1x"S"x64xf32>, tensor<64x96xf32>) -> tensor<1x"S"x96xf32>
    %q, %k = Split(%qk) {axis = 2, split = [64, 32]} : ...

Legal when: two or more MatMuls share operand 0 (a float activation of rank >= 2),
their operand 1 is a constant 2-D weight of the same K and dtype, and no result
is a graph output.  The fused op takes the first sibling's place in the graph
(every sibling's users come after it).

Before it copies a weight, the pass checks the plan's weights (as they will be
stored) and KV cache against the memory budget (`passes._budget.check_early`):
a model that cannot fit fails here, before its weights are read.

With ``weights_meta_only`` (a plan that reads no weight bytes: ``atcpy --mode=3``
of a model whose external weights were never written) the fused weight is a
zero-stride placeholder of the concatenation's shape, dtype and size.

Statistics: ``fusion.sibling_matmuls`` (MatMuls merged into another).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ir.core import Graph, Op, Value
from passes._budget import check_early
from passes._conv_fold import const_of
from passes._meta import placeholder
from passes._rewrite import Rewriter
from passes.base import Pass, PassContext, register

__all__ = ["FuseSiblings"]

MAX_FUSED_N = 1 << 16  # columns of one fused weight (an LM head is not fused with anything this large)


def _weight(op: Op, x: Value) -> np.ndarray | None:
    """The constant 2-D weight of a MatMul that reads `x` as operand 0, or None."""
    if op.kind != "MatMul" or len(op.operands) != 2 or op.operands[0] is not x:
        return None
    w = const_of(op.operands[1])
    if w is None or w.ndim != 2 or w.dtype.kind != "f" or w.dtype != x.type.dtype.numpy:
        return None
    return w


def _siblings(rw: Rewriter, x: Value) -> list[tuple[Op, np.ndarray]]:
    if x.type.rank < 2 or x.type.dtype.numpy.kind != "f":
        return []
    found, seen = [], set()
    for use in x.uses:
        op = use.op
        if id(op) in seen or use.index != 0:
            continue
        seen.add(id(op))
        w = _weight(op, x)
        if w is not None and not rw.is_output(op.result):
            found.append((op, w))
    if not found:
        return []
    k = found[0][1].shape[0]
    group = [(op, w) for op, w in found if w.shape[0] == k and w.dtype == found[0][1].dtype]
    return group if len(group) >= 2 and sum(w.shape[1] for _, w in group) <= MAX_FUSED_N else []


def _concatenated(ws: list[np.ndarray], ctx: PassContext) -> np.ndarray:
    """The weights side by side; with ``weights_meta_only`` a placeholder of that shape
    that reads none of them (zero strides: no bytes behind it)."""
    if ctx.options.weights_meta_only:
        return placeholder((ws[0].shape[0], sum(w.shape[1] for w in ws)), ws[0].dtype)
    return np.concatenate(ws, axis=1)


def _fuse(rw: Rewriter, x: Value, group: list[tuple[Op, np.ndarray]], ctx: PassContext) -> None:
    order = {id(op): i for i, op in enumerate(rw.graph.ops)}
    group.sort(key=lambda g: order[id(g[0])])
    first = group[0][0]
    names = [op.result.name for op, _ in group]
    w = rw.const(_concatenated([w for _, w in group], ctx), name="_".join(op.operands[1].name for op, _ in group))
    mm = rw.add_op("MatMul", [x, w], {"name": "+".join(op.attrs.get("name", op.result.name) for op, _ in group)},
                   before=first, names=["+".join(names)])
    split = rw.add_op("Split", [mm.result], {"axis": x.type.rank - 1, "split": [int(w_.shape[1]) for _, w_ in group]},
                      before=first, names=[f"{n}_part" for n in names])
    for (op, _), part in zip(group, split.results):
        old_w = op.operands[1]
        rw.replace_op(op, [part], inherit_names=True)
        if not old_w.uses and old_w.producer is not None and not rw.is_output(old_w):
            rw.erase(old_w.producer)  # the weight lives on in the concatenation only
    ctx.count("fusion", "sibling_matmuls", len(group))  # MatMuls merged (the report's fusion section)


@register
@dataclass
class FuseSiblings(Pass):
    """One MatMul (and a Split) for the MatMuls reading one activation with constant weights."""

    name: ClassVar[str] = "fuse-siblings"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        check_early(graph, ctx)  # the first pass that copies weights: a plan that cannot fit stops here
        rw = Rewriter(graph)
        changed = False
        values = [v for v in graph.inputs] + [r for op in list(graph.ops) for r in op.results]
        for x in values:
            group = _siblings(rw, x)
            if group:
                _fuse(rw, x, group, ctx)
                changed = True
        return changed
