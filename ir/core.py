"""Values, ops and graphs, with use-def links owned in one place.

Only `Op` mutates uses: setting an operand, erasing an op or replacing a value
goes through the methods here, so ``value.uses`` is always exact.  A graph keeps
its ops in a valid (topological) order in an `OpList` (inserting next to an op
and erasing one are O(1)); constants are ``const`` ops whose ``value``
attribute holds the numpy array.

    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.f32, (1, 64)))
    w = g.const(np.zeros((64, 10), np.float32), name="w")
    y = g.add_op("MatMul", [x, w]).result
    g.outputs.append(y)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ir.types import DType, TensorType

__all__ = ["AttrValue", "Graph", "GraphListener", "Op", "OpList", "Use", "Value"]

AttrValue = Any  # int | float | str | bool | list[...] | np.ndarray


@dataclass(eq=False)
class Use:
    op: Op
    index: int


@dataclass(eq=False)
class Value:
    """An SSA value: a graph input or the result of one op."""

    name: str
    type: TensorType
    producer: Op | None = None
    index: int = 0
    uses: list[Use] = field(default_factory=list)

    @property
    def users(self) -> list[Op]:
        seen: dict[int, Op] = {}
        for u in self.uses:
            seen.setdefault(id(u.op), u.op)
        return list(seen.values())

    def replace_all_uses_with(self, other: Value) -> None:
        for use in list(self.uses):
            use.op.set_operand(use.index, other)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class GraphListener(Protocol):
    """Told about every edit of a graph it listens to (`Graph.listener`)."""

    def op_inserted(self, op: Op) -> None: ...

    def op_erased(self, op: Op) -> None:  # `op` is out of the graph but still holds its operands
        ...

    def operand_changed(self, op: Op, old: Value | None, new: Value | None) -> None: ...

    def output_replaced(self, old: Value, new: Value) -> None: ...


class Op:
    """An operation: kind, operands (``None`` for an absent optional operand),
    results, attributes.  Pass annotations (engine, tile, buffer offsets,
    quant scales) are ordinary attributes, so they print and parse."""

    def __init__(
        self,
        kind: str,
        operands: Sequence[Value | None],
        result_types: Sequence[TensorType],
        attrs: dict[str, AttrValue] | None = None,
        result_names: Sequence[str] | None = None,
    ) -> None:
        self.kind = kind
        self.attrs: dict[str, AttrValue] = dict(attrs or {})
        self.operands: list[Value | None] = []
        self.graph: Graph | None = None
        names = list(result_names) if result_names else [""] * len(result_types)
        self.results = [Value(n, t, self, i) for i, (n, t) in enumerate(zip(names, result_types))]
        for v in operands:
            self._append_operand(v)

    # -- operands ---------------------------------------------------------
    def _append_operand(self, v: Value | None) -> None:
        self.operands.append(v)
        if v is not None:
            v.uses.append(Use(self, len(self.operands) - 1))

    def set_operand(self, i: int, v: Value | None) -> None:
        old = self.operands[i]
        if old is v:
            return
        if old is not None:
            old.uses = [u for u in old.uses if not (u.op is self and u.index == i)]
        self.operands[i] = v
        if v is not None:
            v.uses.append(Use(self, i))
        self._notify(old, v)

    def set_operands(self, values: Sequence[Value | None]) -> None:
        self.drop_operands()
        for v in values:
            self._append_operand(v)
            self._notify(None, v)

    def drop_operands(self) -> None:
        old = self.operands
        for i, v in enumerate(old):
            if v is not None:
                v.uses = [u for u in v.uses if not (u.op is self and u.index == i)]
        self.operands = []
        for v in old:
            self._notify(v, None)

    def _notify(self, old: Value | None, new: Value | None) -> None:
        g = self.graph
        if g is not None and g.listener is not None and old is not new:
            g.listener.operand_changed(self, old, new)

    # -- conveniences -----------------------------------------------------
    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"{self.kind} has {len(self.results)} results, not one")
        return self.results[0]

    @property
    def namespace(self) -> str:
        return self.kind.rsplit(".", 1)[0] if "." in self.kind else ""

    def attr(self, name: str, default: AttrValue = None) -> AttrValue:
        return self.attrs.get(name, default)

    def operand_const(self, i: int) -> np.ndarray | None:
        """The array behind operand `i` if a ``const`` op defines it."""
        if i >= len(self.operands):
            return None
        v = self.operands[i]
        if v is None or v.producer is None or v.producer.kind != "const":
            return None
        return v.producer.attrs["value"]

    def __repr__(self) -> str:
        res = ", ".join(f"%{r.name}" for r in self.results)
        ops = ", ".join("none" if v is None else f"%{v.name}" for v in self.operands)
        return f"<{res} = {self.kind}({ops})>"


class _Link:
    """One place in an `OpList`.  An erased link keeps its `next`, so an
    iterator standing on it walks on to the ops that followed it."""

    __slots__ = ("key", "live", "next", "op", "prev")

    def __init__(self, op: Op | None) -> None:
        self.op, self.key, self.live = op, 0, True
        self.prev: _Link = self
        self.next: _Link = self


class OpList(Sequence[Op]):
    """A graph's ops in order: a doubly linked list, so inserting next to an op
    and erasing one are O(1), with order keys so `comes_before` is O(1) too.

    It reads like the list it replaces (iterate, ``len``, ``ops[0]``,
    ``ops[-1]``, ``list(ops)``, ``op in ops``); indexing elsewhere walks the
    list.  Iterating while the graph is rewritten is safe: an op erased under
    the iterator does not end the walk, and an op inserted ahead of it is seen.

    Keys are spaced ints; an insert takes the midpoint of its neighbours' keys,
    and when there is no room left the keys are renumbered on the next order
    query (not on the insert, which stays O(1))."""

    SPACING = 1 << 40  # room for 40 inserts into one gap before a renumbering

    def __init__(self, ops: Iterable[Op] = ()) -> None:
        self.epoch = 0  # bumped whenever keys handed out before become void
        self._reset(ops)

    def _reset(self, ops: Iterable[Op]) -> None:
        self._end = _Link(None)  # sentinel: _end.next is the first op, _end.prev the last
        self._links: dict[Op, _Link] = {}
        self._stale = False
        self.epoch += 1
        for op in ops:
            self.insert(op)

    # -- editing ------------------------------------------------------------
    def insert(self, op: Op, *, before: Op | None = None, after: Op | None = None) -> None:
        """Place `op` before `before`, after `after`, or (neither) at the end."""
        if op in self._links:
            raise ValueError(f"{op!r} is in the list already")
        if before is not None:
            nxt = self._link(before)
            prev = nxt.prev
        else:
            prev = self._link(after) if after is not None else self._end.prev
            nxt = prev.next
        link = _Link(op)
        link.prev, link.next = prev, nxt
        prev.next = nxt.prev = link
        self._links[op] = link
        if prev is self._end and nxt is self._end:
            link.key = 0
        elif prev is self._end:
            link.key = nxt.key - self.SPACING
        elif nxt is self._end:
            link.key = prev.key + self.SPACING
        elif nxt.key - prev.key > 1:
            link.key = (prev.key + nxt.key) // 2
        else:
            self._stale = True

    def remove(self, op: Op) -> None:
        link = self._link(op)
        del self._links[op]
        link.prev.next = link.next
        link.next.prev = link.prev
        link.live = False

    def reverse(self) -> None:
        self._reset(list(reversed(self)))

    def _link(self, op: Op) -> _Link:
        link = self._links.get(op)
        if link is None:
            raise ValueError(f"{op!r} is not in the list")
        return link

    # -- order --------------------------------------------------------------
    def key(self, op: Op) -> int:
        """A number that grows along the list.  Keys of ops already in the list
        stay put until an insert runs out of room; `epoch` then changes."""
        if self._stale:
            for i, o in enumerate(self):
                self._links[o].key = i * self.SPACING
            self._stale = False
            self.epoch += 1
        return self._link(op).key

    def comes_before(self, a: Op, b: Op) -> bool:
        return self.key(a) < self.key(b)

    @property
    def first(self) -> Op | None:
        return self._end.next.op

    @property
    def last(self) -> Op | None:
        return self._end.prev.op

    # -- reading --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._links)

    def __contains__(self, op: object) -> bool:
        return op in self._links  # type: ignore[operator]

    def __iter__(self) -> Iterator[Op]:
        link = self._end.next
        while link is not self._end:
            if link.live:
                yield link.op  # type: ignore[misc]
            link = link.next

    def __reversed__(self) -> Iterator[Op]:
        link = self._end.prev
        while link is not self._end:
            if link.live:
                yield link.op  # type: ignore[misc]
            link = link.prev

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return list(self)[i]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("op index out of range")
        i %= n
        walk = iter(self) if i < n // 2 else reversed(self)
        return next(itertools.islice(walk, i if i < n // 2 else n - 1 - i, None))

    def __repr__(self) -> str:
        return f"OpList({list(self)!r})"


class Graph:
    """A function: inputs, outputs and ops in a valid order.

    Edits are O(1) per op (`insert`, `erase`, `rename`); a `listener`, when set,
    hears about each one (the rewrite driver uses this to know which ops to
    look at again)."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self._ops = OpList()
        self.attrs: dict[str, AttrValue] = {}
        self.listener: GraphListener | None = None
        self._counter = itertools.count()
        self._names: set[str] = set()

    @property
    def ops(self) -> OpList:
        return self._ops

    @ops.setter
    def ops(self, ops: Iterable[Op]) -> None:
        """Reorder (``graph.ops = sorted_ops``); the ops must be this graph's."""
        self._ops = OpList(ops)

    # -- names --------------------------------------------------------------
    def fresh_name(self, hint: str = "") -> str:
        if hint and hint not in self._names:
            self._names.add(hint)
            return hint
        while True:
            n = f"{hint}_{next(self._counter)}" if hint else str(next(self._counter))
            if n not in self._names:
                self._names.add(n)
                return n

    def has_name(self, name: str) -> bool:
        return name in self._names

    def rename(self, v: Value, name: str) -> None:
        """Give `v` the name `name`, or a fresh one derived from it if taken."""
        if v.name == name:
            return
        self._names.discard(v.name)
        v.name = self.fresh_name(name)

    def _claim(self, v: Value, hint: str) -> None:
        v.name = self.fresh_name(hint or v.name)

    # -- building -----------------------------------------------------------
    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self.fresh_name(name), type)
        self.inputs.append(v)
        return v

    def insert(self, op: Op, *, before: Op | None = None, after: Op | None = None) -> Op:
        """Insert `op` (default: at the end) and name its results uniquely."""
        self._ops.insert(op, before=before, after=after)
        op.graph = self
        for r in op.results:
            self._claim(r, r.name)
        if self.listener is not None:
            self.listener.op_inserted(op)
        return op

    def add_op(self, kind: str, operands: Sequence[Value | None], attrs: dict[str, AttrValue] | None = None, *,
               result_types: Sequence[TensorType] | None = None, names: Sequence[str] | None = None,
               before: Op | None = None, after: Op | None = None) -> Op:
        """Create an op, inferring result types from the registry when not given.
        When inference raises, the graph (operands' uses included) is as it was."""
        from ir.registry import infer_types, lookup

        opdef = lookup(kind)
        full_attrs = opdef.with_defaults(attrs or {}) if opdef else dict(attrs or {})
        if result_types is None:
            probe = Op(kind, operands, [], full_attrs)  # registers uses, so inference sees a real op
            try:
                result_types = infer_types(probe)
            finally:
                probe.drop_operands()
        op = Op(kind, operands, result_types, full_attrs, names)
        return self.insert(op, before=before, after=after)

    def const(self, array: np.ndarray, name: str = "cst", *, before: Op | None = None) -> Value:
        array = np.asarray(array)
        t = TensorType(DType.from_numpy(array.dtype), array.shape)
        op = Op("const", [], [t], {"value": array}, [name])
        if before is None:
            # constants go first so they dominate every use
            before = self._ops.first
        return self.insert(op, before=before).result

    # -- editing ------------------------------------------------------------
    def erase(self, op: Op) -> None:
        for r in op.results:
            if r.uses:
                users = ", ".join(repr(u.op) for u in r.uses)
                raise ValueError(f"cannot erase {op!r}: %{r.name} still used by {users}")
        self._ops.remove(op)
        op.graph = None  # detached first: the listener sees it gone, and dropping its operands is not reported again
        if self.listener is not None:
            self.listener.op_erased(op)
        op.drop_operands()
        for r in op.results:
            self._names.discard(r.name)

    def replace_op(self, op: Op, new_values: Sequence[Value]) -> None:
        """Redirect every use of `op`'s results (and graph outputs) then erase it."""
        for old, new in zip(op.results, new_values):
            self.replace_value(old, new)
        self.erase(op)

    def replace_value(self, old: Value, new: Value) -> None:
        old.replace_all_uses_with(new)
        if any(o is old for o in self.outputs):
            self.outputs = [new if o is old else o for o in self.outputs]
            if self.listener is not None:
                self.listener.output_replaced(old, new)

    def erase_dead(self) -> int:
        """Remove ops none of whose results are used; returns how many."""
        live_out = {id(v) for v in self.outputs}
        removed = 0
        for op in reversed(list(self.ops)):
            if any(r.uses or id(r) in live_out for r in op.results):
                continue
            self.erase(op)
            removed += 1
        return removed

    # -- queries ------------------------------------------------------------
    def __iter__(self) -> Iterator[Op]:
        return iter(list(self.ops))

    def values(self) -> Iterable[Value]:
        yield from self.inputs
        for op in self.ops:
            yield from op.results

    def value(self, name: str) -> Value:
        for v in self.values():
            if v.name == name:
                return v
        raise KeyError(name)

    def count(self, kind: str | None = None) -> int:
        return sum(1 for op in self.ops if kind is None or op.kind == kind)

    def weights_bytes(self) -> int:
        return sum(op.attrs["value"].nbytes for op in self.ops if op.kind == "const")

    def to_networkx(self):  # -> networkx.DiGraph
        """Op-level dependency graph (nodes are ops; edges follow values)."""
        import networkx as nx

        dg = nx.DiGraph()
        for op in self.ops:
            dg.add_node(op)
            for v in op.operands:
                if v is not None and v.producer is not None:
                    dg.add_edge(v.producer, op)
        return dg

    def topo_sort(self) -> None:
        """Reorder ops topologically, stable with respect to the current order."""
        import networkx as nx

        pos = {id(op): i for i, op in enumerate(self.ops)}
        dg = self.to_networkx()
        self.ops = list(nx.lexicographical_topological_sort(dg, key=lambda o: pos[id(o)]))

    def clone(self) -> Graph:
        """A deep copy of the structure; constant arrays are shared, not copied."""
        g = Graph(self.name)
        g.attrs = dict(self.attrs)
        vmap: dict[int, Value] = {}
        for v in self.inputs:
            vmap[id(v)] = g.add_input(v.name, v.type)
        for op in self.ops:
            new = Op(
                op.kind,
                [None if v is None else vmap[id(v)] for v in op.operands],
                [r.type for r in op.results],
                dict(op.attrs),
                [r.name for r in op.results],
            )
            g.insert(new)
            for a, b in zip(op.results, new.results):
                vmap[id(a)] = b
        g.outputs = [vmap[id(v)] for v in self.outputs]
        return g
