"""Lower a final IR graph into a linear program for the runtime.

Every non-``const`` op becomes one step, in graph order::

    %y = fused.matmul_add_relu(%x, %w, %b) {engine = "cube", offsets = [0]} : ... -> tensor<8x32xf32>
      ==>
    {"kernel": "fused.matmul_add_relu", "engine": "cube", "name": "y",
     "inputs": [["a", 0], ["w", "w"], ["w", "b"]], "outputs": [1], "attrs": {...}}

A step whose op draws random numbers carries ``"nondeterministic": true`` (the
Session folds every other step whose operands are all weights, once, at load).
Operands are activations (``["a", id]`` into the activation table), weights
(``["w", name]``) or ``null`` (absent optional operand).  Array attributes
become weights and are referenced as ``{"$weight": name}``.  Each activation
has a dtype, a shape, an arena offset (``-1``: not in the arena — graph
inputs and values whose shape is not static are bound per run) and a size.

The memory plan is the one assign-buffers left in the ``offsets`` attributes
when present; otherwise (or for values it did not place) each activation gets
its own 32-byte aligned region after the planned part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir.core import Graph, Op, Value
from ir.registry import lookup, nondeterministic
from ir.symbolic import dim_bound, dim_prod, parse_ranges
from runtime.om import encode_json_value, np_dtype

__all__ = ["TRIVIAL_ALIGN", "LoweringError", "Program", "lower"]

TRIVIAL_ALIGN = 32


class LoweringError(ValueError):
    """The graph cannot be written as a program (e.g. a subgraph attribute)."""


@dataclass
class Program:
    steps: list[dict[str, Any]] = field(default_factory=list)
    activations: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    opset: int | None = None
    dims: dict[str, list[int]] = field(default_factory=dict)  # symbol -> [lo, hi], the bounds planned for
    gears: dict[str, list] = field(default_factory=dict)  # ATC's gears: {"dims": [symbols], "values": [[...], ...]}
    kv_cache: list[dict[str, Any]] = field(default_factory=list)  # KV cache buffers the Session owns

    def to_json(self) -> dict[str, Any]:
        """The ``program`` section of the .om header (weights by name only)."""
        out = {
            "steps": self.steps, "activations": self.activations, "inputs": self.inputs,
            "outputs": self.outputs, "opset": self.opset,
        }
        if self.dims:
            out["dims"] = self.dims
        if self.gears:
            out["gears"] = self.gears
        if self.kv_cache:
            out["kv_cache"] = self.kv_cache
        return out


def _static_nbytes(v: Value, ranges: dict[str, tuple[int, int]]) -> int | None:
    """Bytes of `v`'s slot: its size, or its size at the bound of its symbols
    (the Session binds a view of the run's actual shape at the same offset)."""
    t = v.type
    if t is None or t.dtype.value in ("str", "bf16"):
        return None
    if t.is_static:
        return int(np.prod(t.shape, dtype=np.int64)) * np_dtype(t.dtype.value).itemsize
    n = dim_bound(dim_prod(t.shape), ranges) if ranges else None
    return None if n is None else max(n, 0) * np_dtype(t.dtype.value).itemsize


def _shape_json(v: Value) -> list[Any]:
    return [d if isinstance(d, int) else str(d) for d in v.type.shape]


class _Lowering:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.p = Program(opset=graph.attrs.get("opset"))
        self.ranges = parse_ranges(graph.attrs.get("dim_ranges"))
        self.p.dims = {k: [lo, hi] for k, (lo, hi) in sorted(self.ranges.items())}
        gears = graph.attrs.get("dim_gears")
        if gears:
            self.p.gears = {"dims": [str(x) for x in gears[0]], "values": [[int(x) for x in v] for v in gears[1:]]}
        self.act: dict[int, int] = {}  # id(Value) -> activation id
        self.wname: dict[int, str] = {}  # id(Value) of a const result -> weight name
        self.used_weights: set[str] = set()

    def add_act(self, v: Value, offset: int) -> int:
        idx = len(self.p.activations)
        nb = _static_nbytes(v, self.ranges)
        self.p.activations.append({
            "name": v.name, "dtype": v.type.dtype.value, "shape": _shape_json(v),
            "offset": offset if nb is not None else -1, "nbytes": nb if nb is not None else -1,
        })
        self.act[id(v)] = idx
        return idx

    def add_kv_cache(self, op: Op) -> list[int]:
        """A KV cache's activations: no arena slot; the Session allocates a buffer at the
        bounds (``program["kv_cache"]``) that lives across runs.  Returns the step's results.

        A compressed cache (``dtype`` set) stores results 1 (and 2, the scales); its
        present (result 0) is no step's result: the Session reads it back from the
        stored cache when the caller asks for that output (``present_act``)."""
        acts = []
        for r in op.results:
            a = self.add_act(r, -1)
            self.p.activations[a]["offset"] = self.p.activations[a]["nbytes"] = -1
            acts.append(a)
        stored = 1 if op.attrs.get("dtype") else 0
        r = op.results[stored]
        past = op.operands[0]
        entry = {"act": acts[stored], "past": past.name if past is not None else None, "present": op.results[0].name,
                 "axis": int(op.attrs["axis"]), "capacity": [dim_bound(d, self.ranges) for d in r.type.shape]}
        if stored:
            entry.update(dtype=str(op.attrs["dtype"]), present_act=acts[0])
        if len(op.results) > 2:
            entry.update(scale=acts[2], scale_capacity=[dim_bound(d, self.ranges) for d in op.results[2].type.shape])
        self.p.kv_cache.append(entry)
        return acts[stored:]

    def ref(self, v: Value | None) -> list[Any] | None:
        if v is None:
            return None
        if id(v) in self.wname:
            name = self.wname[id(v)]
            if name not in self.p.weights:
                self.p.weights[name] = v.producer.attrs["value"]  # type: ignore[union-attr]
            return ["w", name]
        if id(v) not in self.act:
            raise LoweringError(f"%{v.name} is used before it is defined")
        return ["a", self.act[id(v)]]

    def attr(self, op: Op, key: str, val: Any, owner: str) -> Any:
        if isinstance(val, np.ndarray):
            name = f"{owner}::{key}"
            self.p.weights[name] = val
            return {"$weight": name}
        if isinstance(val, np.generic):
            return encode_json_value(val.item())
        if isinstance(val, (list, tuple)) and any(isinstance(x, np.ndarray) for x in val):
            return [self.attr(op, f"{key}.{i}", x, owner) for i, x in enumerate(val)]
        try:
            return encode_json_value(val)
        except TypeError:
            raise LoweringError(
                f"{op.kind} %{op.results[0].name if op.results else '?'}: attribute {key!r} of type "
                f"{type(val).__name__} cannot be written to an .om (subgraphs are not supported)") from None

    def step(self, op: Op, owner: str, inputs: list, outs: list[int]) -> dict[str, Any]:
        """The program step of `op`: kernel, engine, operands, results and attributes."""
        engine = op.attrs.get("engine") or ("vector" if lookup(op.kind) is not None else "aicpu")
        attrs = {k: self.attr(op, k, v, owner) for k, v in op.attrs.items()}
        step: dict[str, Any] = {
            "kernel": op.kind, "engine": engine, "name": str(op.attrs.get("name") or owner),
            "inputs": inputs, "outputs": outs, "attrs": attrs,
        }
        opset = op.attrs.get("opset", self.g.attrs.get("opset"))
        if opset is not None:
            step["opset"] = int(opset)
        if nondeterministic(op):  # the Session must not run it once at load and reuse the result
            step["nondeterministic"] = True
        return step

    def run(self) -> Program:
        g, p = self.g, self.p
        for v in g.inputs:
            a = self.add_act(v, -1)
            p.inputs.append({"name": v.name, "dtype": v.type.dtype.value, "shape": _shape_json(v), "act": a})
        planned = any("offsets" in op.attrs for op in g.ops)
        arena_end = int(g.attrs.get("arena_bytes", 0) or 0) if planned else 0
        pending: list[tuple[int, int]] = []  # (act id, nbytes) that still need a region
        for op in g.ops:
            if op.kind == "const":
                self.wname[id(op.result)] = op.result.name
                continue
            owner = op.results[0].name if op.results else f"step{len(p.steps)}"
            inputs = [self.ref(v) for v in op.operands]
            offs = op.attrs.get("offsets") if planned else None
            outs = []
            if op.kind == "kv.append":
                outs.extend(self.add_kv_cache(op))
            for i, r in enumerate(op.results if op.kind != "kv.append" else ()):
                off = -1
                if offs is not None and i < len(offs) and offs[i] is not None and int(offs[i]) >= 0:
                    off = int(offs[i])
                a = self.add_act(r, off)
                nb = p.activations[a]["nbytes"]
                if nb >= 0 and off >= 0:
                    arena_end = max(arena_end, off + nb)
                elif nb >= 0:
                    pending.append((a, nb))
                outs.append(a)
            p.steps.append(self.step(op, owner, inputs, outs))
        # values the planner did not place (or no planner at all): one fresh region each
        arena = arena_end
        if pending:
            pos = -(-arena_end // TRIVIAL_ALIGN) * TRIVIAL_ALIGN
            for a, nb in pending:
                p.activations[a]["offset"] = pos
                pos += -(-max(nb, 1) // TRIVIAL_ALIGN) * TRIVIAL_ALIGN
            arena = pos
        for v in g.outputs:
            p.outputs.append({"name": v.name, "dtype": v.type.dtype.value, "shape": _shape_json(v), "ref": self.ref(v)})
        weights_bytes = int(sum(w.nbytes for w in p.weights.values() if w.dtype != object))
        p.memory = {
            "arena_bytes": int(arena),
            "planned_by": "assign-buffers" if planned else "codegen (one region per value)",
            "lower_bound_bytes": int(g.attrs.get("lower_bound_bytes", 0) or 0),
            "naive_bytes": int(g.attrs.get("naive_bytes", 0) or sum(
                max(a["nbytes"], 0) for a in p.activations if a["offset"] >= 0)),
            "weights_bytes": weights_bytes,
        }
        return p


def lower(graph: Graph) -> Program:
    """The linear program for `graph` (see the module docstring)."""
    return _Lowering(graph).run()
