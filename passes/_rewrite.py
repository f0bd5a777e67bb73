"""Rewrite rules as data, applied to a fixed point by one walker.

A rule is ``fn(graph, op, ctx) -> bool`` (True when it rewrote something); a
table maps an op kind (or ``"*"`` for every kind) to its rules, tried in order:

    RULES: RuleTable = {"Identity": [forward_operand], "*": [fold_constants]}
    apply_rules(graph, RULES, ctx)

The walker sweeps the ops in order, applying the first rule that fires to each
live op, and repeats sweeps until none fires (bounded, so a rule pair that
undoes each other is reported instead of looping forever).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ir.core import Graph, Op, Value
from ir.registry import lookup
from ir.types import TensorType
from passes.base import PassContext, PassError, log

__all__ = ["Rule", "RuleTable", "apply_rules", "is_output", "refresh_types", "rename", "replace_op", "single_use"]

Rule = Callable[[Graph, Op, PassContext], bool]
RuleTable = Mapping[str, Sequence[Rule]]

MAX_SWEEPS = 64


def apply_rules(graph: Graph, table: RuleTable, ctx: PassContext, *, erase_dead: bool = True) -> bool:
    """Apply `table` until no rule fires; returns whether anything changed."""
    generic = list(table.get("*", ()))
    changed = False
    for _ in range(MAX_SWEEPS):
        fired = False
        for op in list(graph.ops):
            if op.graph is not graph:  # erased by an earlier rewrite in this sweep
                continue
            for rule in (*table.get(op.kind, ()), *generic):
                if rule(graph, op, ctx):
                    fired = True
                    break
        if erase_dead and graph.erase_dead():
            fired = True
        if not fired:
            return changed
        changed = True
    raise PassError(f"rewrite rules did not reach a fixed point after {MAX_SWEEPS} sweeps")


def is_output(graph: Graph, v: Value) -> bool:
    return any(o is v for o in graph.outputs)


def single_use(graph: Graph, v: Value) -> bool:
    """`v` feeds exactly one operand slot and is not a graph output."""
    return len(v.uses) == 1 and not is_output(graph, v)


def rename(graph: Graph, v: Value, name: str) -> None:
    """Give `v` the (free) name `name`; used so graph outputs keep their names."""
    if v.name == name:
        return
    graph._names.discard(v.name)
    v.name = graph.fresh_name(name)


def replace_op(graph: Graph, op: Op, new_values: Sequence[Value], *, inherit_names: bool = False) -> None:
    """`graph.replace_op`, keeping the names of graph outputs it redirects
    (callers and runtimes address outputs by name).  With `inherit_names`
    every new value takes the name of the value it replaces (a fused op's
    result keeps the name of the chain's last result)."""
    keep = {id(new): old.name for old, new in zip(op.results, new_values)
            if (inherit_names or is_output(graph, old)) and new.producer is not None
            and not is_output(graph, new)}
    graph.replace_op(op, new_values)
    for new in new_values:
        if id(new) in keep:
            rename(graph, new, keep[id(new)])


def _refines(old: TensorType, new: TensorType) -> bool:
    """`new` is `old` with some symbolic dims made concrete (or equal)."""
    if old.dtype != new.dtype or old.rank != new.rank:
        return False
    return all(a == b or not isinstance(a, int) for a, b in zip(old.shape, new.shape))


def refresh_types(graph: Graph) -> bool:
    """Re-infer result types in order after rewrites made operands more
    static (a folded Shape makes a Reshape's target constant, ...).  Only
    refinements are applied; anything else is left for the verifier."""
    changed = False
    for op in graph.ops:
        d = lookup(op.kind)
        if d is None or op.kind == "const":
            continue
        try:
            new = d.infer(op)
        except Exception as e:  # noqa: BLE001 - inference on partial info may fail; the verifier reports real errors
            log.debug("refresh_types: %s: %s", op.kind, e)
            continue
        if len(new) != len(op.results):
            continue
        for r, t in zip(op.results, new):
            if r.type != t and _refines(r.type, t):
                r.type = t
                changed = True
    return changed
