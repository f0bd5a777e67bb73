"""cse: one op for each computation done twice.

Exporters repeat work per layer: an LLM rebuilds the same attention-mask slice
and the same unsqueezed cos/sin in every layer, and leaves equal small
constants behind.  Two ops of the same kind with the same operands and the same
attributes compute the same values (ops that draw random numbers excepted), so
the later one's results are replaced by the earlier one's.  Small constants
(at most `MAX_CONST_ELEMENTS` elements) with equal dtype, shape and bytes are
merged first, so the ops reading them become equal too.  Under
``weights_meta_only`` a constant mapped from external data is never read, so
never merged: a plan of unwritten weights (all zeros) keeps each one.

    %a = Unsqueeze(%cos, %ax0) : (tensor<Sx16xf32>, tensor<1xi64>) -> tensor<1xSx16xf32>
    %b = Unsqueeze(%cos, %ax1) : (tensor<Sx16xf32>, tensor<1xi64>) -> tensor<1xSx16xf32>   (%ax1 == %ax0)
    // cse ==>
    %a = Unsqueeze(%cos, %ax0) : ...        (every use of %b reads %a)

A result that is a graph output is never replaced (outputs keep their names).

Statistics: ``cse.merged_ops``, ``cse.merged_constants``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ir.core import Graph, Op
from ir.registry import nondeterministic
from passes._meta import unread
from passes.base import Pass, PassContext, register

__all__ = ["MAX_CONST_ELEMENTS", "Cse"]

MAX_CONST_ELEMENTS = 4096  # larger constants are weights: not hashed, never equal by accident


def _frozen(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest())
    if isinstance(v, (list, tuple)):
        return tuple(_frozen(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _frozen(x)) for k, x in v.items()))
    return (type(v).__name__, v)


def _key(op: Op, options: Any = None) -> tuple | None:
    if op.kind == "const":
        a = op.attrs["value"]
        if a.size > MAX_CONST_ELEMENTS or a.dtype == object or unread(a, options):
            return None
        return ("const", _frozen(a))
    if nondeterministic(op):
        return None
    attrs = tuple(sorted((k, _frozen(v)) for k, v in op.attrs.items() if k != "name"))  # the opset counts
    operands = tuple(None if v is None else id(v) for v in op.operands)
    return (op.kind, operands, attrs, len(op.results))


def eliminate(graph: Graph, options: Any = None) -> tuple[int, int]:
    """Merge equal computations in `graph`; returns (ops merged, constants merged).
    With ``options.weights_meta_only``, constants mapped from external data are not
    read, so never merged (`passes._meta`)."""
    seen: dict[tuple, Op] = {}
    outputs = {id(v) for v in graph.outputs}
    merged = consts = 0
    for op in list(graph.ops):
        key = _key(op, options)
        if key is None:
            continue
        first = seen.get(key)
        if first is None:
            seen[key] = op
            continue
        if any(id(r) in outputs for r in op.results) or any(
                a.type != b.type for a, b in zip(first.results, op.results)):
            continue
        graph.replace_op(op, list(first.results))
        if op.kind == "const":
            consts += 1
        else:
            merged += 1
    return merged, consts


@register
@dataclass
class Cse(Pass):
    """Common-subexpression elimination (see module doc)."""

    name: ClassVar[str] = "cse"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        merged, consts = eliminate(graph, ctx.options)
        if merged:
            ctx.count("cse", "merged_ops", merged)
        if consts:
            ctx.count("cse", "merged_constants", consts)
        return bool(merged or consts)
