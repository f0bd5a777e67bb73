"""Values, ops and graphs, with use-def links owned in one place.

Only `Op` mutates uses: setting an operand, erasing an op or replacing a value
goes through the methods here, so ``value.uses`` is always exact.  A graph keeps
its ops in a valid (topological) order; constants are ``const`` ops whose
``value`` attribute holds the numpy array.

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
from typing import Any

import numpy as np

from ir.types import DType, TensorType

__all__ = ["AttrValue", "Graph", "Op", "Use", "Value"]

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

    def set_operands(self, values: Sequence[Value | None]) -> None:
        self.drop_operands()
        for v in values:
            self._append_operand(v)

    def drop_operands(self) -> None:
        for i, v in enumerate(self.operands):
            if v is not None:
                v.uses = [u for u in v.uses if not (u.op is self and u.index == i)]
        self.operands = []

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


class Graph:
    """A function: inputs, outputs and ops in a valid order."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.ops: list[Op] = []
        self.attrs: dict[str, AttrValue] = {}
        self._counter = itertools.count()
        self._names: set[str] = set()

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

    def _claim(self, v: Value, hint: str) -> None:
        v.name = self.fresh_name(hint or v.name)

    # -- building -----------------------------------------------------------
    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self.fresh_name(name), type)
        self.inputs.append(v)
        return v

    def insert(self, op: Op, *, before: Op | None = None, after: Op | None = None) -> Op:
        """Insert `op` (default: at the end) and name its results uniquely."""
        op.graph = self
        for r in op.results:
            self._claim(r, r.name)
        if before is not None:
            self.ops.insert(self.ops.index(before), op)
        elif after is not None:
            self.ops.insert(self.ops.index(after) + 1, op)
        else:
            self.ops.append(op)
        return op

    def add_op(
        self,
        kind: str,
        operands: Sequence[Value | None],
        attrs: dict[str, AttrValue] | None = None,
        *,
        result_types: Sequence[TensorType] | None = None,
        names: Sequence[str] | None = None,
        before: Op | None = None,
        after: Op | None = None,
    ) -> Op:
        """Create an op, inferring result types from the registry when not given."""
        from ir.registry import infer_types, lookup

        opdef = lookup(kind)
        full_attrs = opdef.with_defaults(attrs or {}) if opdef else dict(attrs or {})
        if result_types is None:
            op = Op(kind, operands, [], full_attrs)
            result_types = infer_types(op)
            op.drop_operands()
        op = Op(kind, operands, result_types, full_attrs, names)
        return self.insert(op, before=before, after=after)

    def const(self, array: np.ndarray, name: str = "cst", *, before: Op | None = None) -> Value:
        array = np.asarray(array)
        t = TensorType(DType.from_numpy(array.dtype), array.shape)
        op = Op("const", [], [t], {"value": array}, [name])
        if before is None:
            # constants go first so they dominate every use
            before = next((o for o in self.ops), None)
        return self.insert(op, before=before).result

    # -- editing ------------------------------------------------------------
    def erase(self, op: Op) -> None:
        for r in op.results:
            if r.uses:
                users = ", ".join(repr(u.op) for u in r.uses)
                raise ValueError(f"cannot erase {op!r}: %{r.name} still used by {users}")
        op.drop_operands()
        self.ops.remove(op)
        for r in op.results:
            self._names.discard(r.name)
        op.graph = None

    def replace_op(self, op: Op, new_values: Sequence[Value]) -> None:
        """Redirect every use of `op`'s results (and graph outputs) then erase it."""
        for old, new in zip(op.results, new_values):
            self.replace_value(old, new)
        self.erase(op)

    def replace_value(self, old: Value, new: Value) -> None:
        old.replace_all_uses_with(new)
        self.outputs = [new if o is old else o for o in self.outputs]

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
