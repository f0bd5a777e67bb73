"""Rewrite rules as data, applied to a fixed point by one worklist driver.

A rule is ``fn(rw, op, ctx) -> bool``: it looks at `op` and its neighbours,
edits through the `Rewriter` `rw`, and returns True when it rewrote something.
A table maps an op kind (or ``"*"`` for every kind) to its rules, tried in
order; the first that fires ends the op's turn:

    RULES: RuleTable = {"Identity": [forward_operand], "*": [fold_constants]}
    rewrite(graph, RULES, ctx)

The driver works in rounds, in graph order.  The first round visits every op.
While a rule edits the graph, the rewriter (the graph's listener) marks the
ops whose rules may now see something new: an op inserted or whose operands
changed, with the producers of its operands and the users up to two steps down
of its results, and the producer and the users up to two steps down of every
value that gained or lost a use (the rules here look at most two ops up a
chain, and at the users of a result).  A marked op ahead of the round's
cursor is visited in the same round; one behind it, the cursor op itself and
ops created in the round wait for the next round.  That is the order repeated
full sweeps took, without visiting ops nothing touched.  Dead ops are erased
at the end of each round; the rounds are bounded, so rules that undo each other
are reported instead of looping forever.

`apply_rules` runs tables whose rules still take the graph (``fn(graph, op,
ctx)``) through the same driver.

Provenance.  Each op knows the ONNX nodes it computes: `origins(op)` is its
``_origins`` attribute, or ``[name]`` for an op the frontend made from one
node.  `replace_op` is the one place a rewrite's result takes over, so the
rule lives there: the ops producing the new values inherit the origins of the
replaced op and of every op that dies with it (its operands' producers, up the
chain, whose results are then unused and not graph outputs; constants carry
none).  That one rule covers an epilogue fusion (``Relu`` replaced, the
``Conv`` it read dies), BatchNorm folded into a new Conv (the old Conv dies),
a squeeze-excitation block, a quantized Cube op (which takes the fused op's
list), an LLM pattern, and a forwarded operand (``Identity``: its producer
takes the node).  Passes that rebuild an op from ``dict(op.attrs)`` copy the
list with it.  It is written only when it differs from ``[name]``, so IR without
fusions prints as before; codegen copies it into the `.om` step's attributes
(ATC's ``_datadump_original_op_names``), which `atcpy-compare` reads.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ir.core import Graph, Op, Value
from ir.registry import lookup
from ir.types import TensorType
from passes.base import PassContext, PassError, log

__all__ = [
    "ORIGINS", "GraphRule", "Rewriter", "Rule", "RuleTable", "apply_rules", "inherit_origins", "is_output", "origins",
    "refresh_types", "rename", "replace_op", "rewrite", "single_use",
]

Rule = Callable[["Rewriter", Op, PassContext], bool]
RuleTable = Mapping[str, Sequence[Rule]]
GraphRule = Callable[[Graph, Op, PassContext], bool]

MAX_ROUNDS = 64
ORIGINS = "_origins"
DEAD_DEPTH = 8


def is_output(graph: Graph, v: Value) -> bool:
    return any(o is v for o in graph.outputs)


def single_use(graph: Graph, v: Value) -> bool:
    """`v` feeds exactly one operand slot and is not a graph output."""
    return len(v.uses) == 1 and not is_output(graph, v)


def rename(graph: Graph, v: Value, name: str) -> None:
    """Give `v` the (free) name `name`; used so graph outputs keep their names."""
    graph.rename(v, name)


def origins(op: Op) -> list[str]:
    """The ONNX node names `op` computes (see the module docstring)."""
    o = op.attrs.get(ORIGINS)
    if o is not None:
        return [str(n) for n in o]
    name = op.attrs.get("name")
    return [str(name)] if name else []


def _dead_origins(graph: Graph, producers: list[Op]) -> list[str]:
    """Origins of `producers` and their producers that no longer have a use:
    the chain that dies with a replaced op."""
    outputs = {id(v) for v in graph.outputs}
    found: list[str] = []
    # Ops die without being erased yet (the driver erases dead ops after each round), so a use
    # counts only if its op is live.  Such dead chains are a few ops long: looking DEAD_DEPTH
    # users down and calling anything further live keeps this local (and conservative).
    dead: set[int] = set()  # only "dead" is remembered: "live" may be the depth cut-off's guess

    def is_dead(op: Op, depth: int = 0) -> bool:
        if id(op) in dead:
            return True
        if depth >= DEAD_DEPTH or any(id(r) in outputs or any(not is_dead(u.op, depth + 1) for u in r.uses)
                                      for r in op.results):
            return False
        dead.add(id(op))
        return True

    seen: set[int] = set()
    stack = list(producers)
    while stack:
        p = stack.pop()
        if id(p) in seen or p.kind == "const" or p.graph is not graph:
            continue
        seen.add(id(p))
        if is_dead(p):
            found.extend(origins(p))
            stack.extend(v.producer for v in p.operands if v is not None and v.producer is not None)
    return found


def inherit_origins(graph: Graph, op: Op, new_values: Sequence[Value], gone: list[str],
                    producers: list[Op]) -> None:
    """Give the producers of `new_values` the origins `gone` of the replaced `op` (taken
    before it was erased) and of the chain above it that died with it."""
    lost = gone + _dead_origins(graph, producers)
    if not lost:
        return
    for v in new_values:
        p = v.producer
        if p is None or p is op or p.kind == "const":
            continue
        mine = origins(p)
        merged = list(dict.fromkeys(mine + lost))
        if merged != mine:
            p.attrs[ORIGINS] = merged


def replace_op(graph: Graph, op: Op, new_values: Sequence[Value], *, inherit_names: bool = False) -> None:
    """`graph.replace_op`, keeping the names of graph outputs it redirects
    (callers and runtimes address outputs by name).  With `inherit_names`
    every new value takes the name of the value it replaces (a fused op's
    result keeps the name of the chain's last result).  The new values'
    producers inherit `op`'s provenance (module docstring)."""
    keep = {id(new): old.name for old, new in zip(op.results, new_values)
            if (inherit_names or is_output(graph, old)) and new.producer is not None
            and not is_output(graph, new)}
    gone = origins(op)
    producers = [v.producer for v in op.operands if v is not None and v.producer is not None]
    graph.replace_op(op, new_values)
    inherit_origins(graph, op, new_values, gone, producers)
    for new in new_values:
        if id(new) in keep:
            graph.rename(new, keep[id(new)])


class Rewriter:
    """The one door rules edit a graph through, and the driver's bookkeeping.

    While the driver runs, the rewriter listens to the graph, so every edit
    (through these methods or straight on the graph) marks the ops to visit
    again.  `changed` says whether a rule reported a rewrite or dead ops were
    erased; a rule that builds ops, finds them wrong and erases them again
    returns False and changes nothing.  `give_up` records that a rule can
    never apply to an op (onnx.reference cannot evaluate it), for as long as
    this rewriter lives."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.changed = False
        self._given_up: set[tuple[Op, Any]] = set()
        self._dirty: set[Op] = set()  # to visit in the next round
        self._maybe_dead: set[Op] = set()
        # the round under way: a heap of (key, seq, op) ordered by graph position
        self._heap: list[tuple[int, int, Op]] = []
        self._epoch = -1
        self._seq = itertools.count()
        self._cursor: Op | None = None
        self._born: set[Op] = set()

    # -- edits ----------------------------------------------------------------
    def add_op(self, kind: str, operands: Sequence[Value | None], attrs: dict | None = None, **kw: Any) -> Op:
        return self.graph.add_op(kind, operands, attrs, **kw)

    def const(self, array: Any, name: str = "cst") -> Value:
        return self.graph.const(array, name)

    def erase(self, op: Op) -> None:
        self.graph.erase(op)

    def replace_value(self, old: Value, new: Value) -> None:
        self.graph.replace_value(old, new)

    def replace_op(self, op: Op, new_values: Sequence[Value], *, inherit_names: bool = False) -> None:
        replace_op(self.graph, op, new_values, inherit_names=inherit_names)

    def set_operand(self, op: Op, i: int, v: Value | None) -> None:
        op.set_operand(i, v)

    def replace_with(self, op: Op, kind: str, operands: Sequence[Value | None], attrs: dict | None = None) -> bool:
        """Replace single-result `op` by a new `kind` op (inserted before it, inheriting its
        result's name) when the new op infers `op`'s result type; else leave the graph as it was."""
        new = self.add_op(kind, operands, attrs, before=op)
        if new.result.type != op.result.type:  # not the same computation (e.g. a broadcast changed the shape)
            self.erase(new)
            return False
        self.replace_op(op, [new.result], inherit_names=True)
        return True

    def rename(self, v: Value, name: str) -> None:
        self.graph.rename(v, name)

    def give_up(self, op: Op, rule: Any) -> None:
        self._given_up.add((op, rule))

    def is_output(self, v: Value) -> bool:
        return is_output(self.graph, v)

    def single_use(self, v: Value) -> bool:
        return single_use(self.graph, v)

    # -- GraphListener: what an edit may have made matchable ---------------------
    def op_inserted(self, op: Op) -> None:
        self._born.add(op)
        self._maybe_dead.add(op)
        self._touch_op(op)
        for v in op.operands:
            self._touch_value(v)

    def op_erased(self, op: Op) -> None:
        for v in op.operands:
            self._lost_use(v)

    def operand_changed(self, op: Op, old: Value | None, new: Value | None) -> None:
        self._touch_op(op)
        self._lost_use(old)
        self._touch_value(new)

    def output_replaced(self, old: Value, new: Value) -> None:
        self._lost_use(old)
        self._touch_value(new)

    def _lost_use(self, v: Value | None) -> None:
        if v is not None and v.producer is not None:
            self._maybe_dead.add(v.producer)
        self._touch_value(v)

    def _touch_op(self, op: Op) -> None:
        self._mark(op)
        for v in op.operands:
            if v is not None and v.producer is not None:
                self._mark(v.producer)
        for r in op.results:
            self._mark_users(r, depth=2)

    def _touch_value(self, v: Value | None) -> None:
        if v is None:
            return
        if v.producer is not None:
            self._mark(v.producer)
        self._mark_users(v, depth=2)

    def _mark_users(self, v: Value, depth: int) -> None:
        for u in v.uses:
            self._mark(u.op)
            if depth > 1:
                for r in u.op.results:
                    self._mark_users(r, depth - 1)

    def _mark(self, op: Op) -> None:
        if op.graph is not self.graph:
            return
        cur = self._cursor
        if cur is not None and op not in self._born and cur.graph is self.graph \
                and self.graph.ops.comes_before(cur, op):
            self._push(op)  # a full sweep would still reach it in this round
        else:
            self._dirty.add(op)

    # -- the round's heap -------------------------------------------------------
    def _push(self, op: Op) -> None:
        self._sync()
        heapq.heappush(self._heap, (self.graph.ops.key(op), next(self._seq), op))

    def _sync(self) -> None:
        """Re-key the heap when the op list renumbered its keys (old and new
        keys do not compare)."""
        ops = self.graph.ops
        if ops.epoch != self._epoch:
            live = [op for _, _, op in self._heap if op in ops]
            self._heap = [(ops.key(op), next(self._seq), op) for op in live]
            self._epoch = ops.epoch  # read after keying, which may have renumbered
            heapq.heapify(self._heap)

    def _round(self, todo: Iterable[Op], table: RuleTable, ctx: PassContext) -> bool:
        """Visit `todo` and the ops marked ahead of the cursor, in graph order."""
        generic = tuple(table.get("*", ()))
        self._heap, self._epoch, self._born = [], -1, set()
        for op in todo:
            if op.graph is self.graph:
                self._heap.append((0, next(self._seq), op))
        self._sync()
        fired = False
        visited: set[Op] = set()
        while True:
            self._sync()
            if not self._heap:
                break
            op = heapq.heappop(self._heap)[2]
            if op.graph is not self.graph or op in visited:
                continue
            visited.add(op)
            self._cursor = op
            for rule in (*table.get(op.kind, ()), *generic):
                if (op, rule) not in self._given_up and rule(self, op, ctx):
                    fired = True
                    break
        self._cursor = None
        return fired

    def _erase_dead(self) -> bool:
        """Erase the ops among the candidates (and, in turn, their producers)
        whose results are unused and not graph outputs."""
        stack, self._maybe_dead = list(self._maybe_dead), set()
        outputs = {id(v) for v in self.graph.outputs}
        removed = False
        while stack:
            op = stack.pop()
            if op.graph is not self.graph or any(r.uses or id(r) in outputs for r in op.results):
                continue
            stack.extend(v.producer for v in op.operands if v is not None and v.producer is not None)
            self.graph.erase(op)
            removed = True
        return removed


def rewrite(graph: Graph, table: RuleTable, ctx: PassContext, *, rewriter: Rewriter | None = None,
            erase_dead: bool = True) -> bool:
    """Apply `table` until no rule fires; returns whether anything changed."""
    rw = rewriter or Rewriter(graph)
    previous, graph.listener = graph.listener, rw
    try:
        todo: Iterable[Op] = list(graph.ops)
        rw._dirty.clear()
        rw._maybe_dead = set(graph.ops) if erase_dead else set()
        changed = False
        for _ in range(MAX_ROUNDS):
            fired = rw._round(todo, table, ctx)
            if erase_dead and rw._erase_dead():
                fired = True
            if not fired:
                rw.changed |= changed
                return changed
            changed = True
            todo, rw._dirty = list(rw._dirty), set()
            if not erase_dead:
                rw._maybe_dead.clear()
    finally:
        graph.listener = previous
    raise PassError(f"rewrite rules did not reach a fixed point after {MAX_ROUNDS} rounds")


def apply_rules(graph: Graph, table: Mapping[str, Sequence[GraphRule]], ctx: PassContext, *,
                erase_dead: bool = True) -> bool:
    """`rewrite` for rules that take the graph instead of a rewriter."""
    return rewrite(graph, {kind: [_on_graph(r) for r in rules] for kind, rules in table.items()}, ctx,
                   erase_dead=erase_dead)


def _on_graph(rule: GraphRule) -> Rule:
    def run(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
        return rule(rw.graph, op, ctx)

    run.__name__ = getattr(rule, "__name__", "rule")
    return run


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
