"""Random graphs for the memory-plan properties, and a NumPy interpreter that
runs a graph *through its arena plan* (every planned value read from and
written to one bytearray at its offset), so a wrong alias shows up as a wrong
output.

Graphs are random DAGs of elementwise ops (unary, binary, broadcasting), MatMul,
views (Reshape, Flatten, Unsqueeze, Squeeze) and Concat over 2-D f32 tensors.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ir.core import Graph, Op, Value
from ir.types import DType, TensorType

__all__ = ["alias_groups", "concat_slices", "graphs", "live_ranges", "run_in_arena", "run_reference"]

UNARY = {"Relu": lambda a: np.maximum(a, 0), "Neg": np.negative, "Abs": np.abs}
BINARY = {"Add": np.add, "Mul": np.multiply, "Sub": np.subtract}
VIEWS = ("Reshape", "Flatten", "Unsqueeze", "Squeeze")
DIMS = st.sampled_from([1, 2, 3, 5, 8, 16])


@st.composite
def graphs(draw: st.DrawFn, max_ops: int = 14) -> Graph:
    g = Graph("rand")
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    pool: list[Value] = [g.add_input("x", TensorType(DType.f32, (draw(DIMS), draw(DIMS))))]
    if draw(st.booleans()):
        pool.append(g.add_input("y", TensorType(DType.f32, (1, draw(DIMS)))))

    def const(shape: tuple[int, ...]) -> Value:
        return g.const(rng.standard_normal(shape).astype(np.float32), "c")

    for _ in range(draw(st.integers(1, max_ops))):
        v = draw(st.sampled_from(pool))
        shape = v.type.shape
        kind = draw(st.sampled_from(["unary", "binary", "matmul", "view", "concat"]))
        if kind == "unary":
            new = g.add_op(draw(st.sampled_from(sorted(UNARY))), [v])
        elif kind == "binary":
            # another value broadcast-compatible with v (same rank), else a constant
            partners = [u for u in pool if u.type.rank == v.type.rank and _broadcasts(u.type.shape, shape)]
            u = draw(st.sampled_from(partners)) if partners and draw(st.booleans()) else const(shape)
            a, b = (v, u) if draw(st.booleans()) else (u, v)
            new = g.add_op(draw(st.sampled_from(sorted(BINARY))), [a, b])
        elif kind == "matmul" and v.type.rank == 2:
            if draw(st.booleans()):
                new = g.add_op("MatMul", [v, const((shape[1], draw(DIMS)))])
            else:  # a row vector times v: a (1, n) activation for broadcasting
                new = g.add_op("MatMul", [const((1, shape[0])), v])
        elif kind == "concat":
            new = _concat(g, draw, v, pool)
        else:
            new = _view(g, draw, v)
        pool.append(new.result)
    acts = [v for v in pool if v.producer is not None]
    outs = [acts[-1]] + [v for v in acts[:-1] if draw(st.integers(0, 3)) == 0]
    if draw(st.integers(0, 5)) == 0:
        outs.append(pool[0])  # a graph input returned as an output
    g.outputs = list(dict.fromkeys(outs))
    return g


def _broadcasts(a: tuple, b: tuple) -> bool:
    try:
        return np.broadcast_shapes(a, b) in (tuple(a), tuple(b))
    except ValueError:
        return False


def _concat(g: Graph, draw: st.DrawFn, v: Value, pool: list[Value]) -> Op:
    """v and 1-3 more values (repeats allowed) that agree with it off the axis."""
    axis = draw(st.integers(0, v.type.rank - 1))
    fits = [u for u in pool if u.type.rank == v.type.rank
            and all(a == b for k, (a, b) in enumerate(zip(u.type.shape, v.type.shape)) if k != axis)]
    xs = [v] + [draw(st.sampled_from(fits)) for _ in range(draw(st.integers(1, 3)))]
    order = draw(st.permutations(xs))
    return g.add_op("Concat", list(order), {"axis": axis})


def _view(g: Graph, draw: st.DrawFn, v: Value) -> Op:
    shape = v.type.shape
    kind = draw(st.sampled_from(VIEWS))
    if kind == "Reshape":
        target = [int(np.prod(shape))] if v.type.rank == 2 else [1, int(np.prod(shape))]
        return g.add_op("Reshape", [v, g.const(np.array(target, np.int64), "s")])
    if kind == "Flatten" or v.type.rank == 1:
        return g.add_op("Flatten", [v], {"axis": 1}) if v.type.rank == 2 else g.add_op("Unsqueeze", [v], {"axes": [0]})
    if kind == "Squeeze" and 1 in shape:
        return g.add_op("Squeeze", [v], {"axes": [shape.index(1)]})
    return g.add_op("Reshape", [v, g.const(np.array([int(np.prod(shape))], np.int64), "s")])


# -- interpreters ---------------------------------------------------------------
def _compute(op: Op, args: list[np.ndarray]) -> np.ndarray:
    if op.kind in UNARY:
        return UNARY[op.kind](args[0])
    if op.kind in BINARY:
        return BINARY[op.kind](args[0], args[1])
    if op.kind == "MatMul":
        return args[0] @ args[1]
    if op.kind in VIEWS:
        return args[0].reshape(op.result.type.shape)
    if op.kind == "Concat":
        return np.concatenate(args, axis=op.attrs["axis"])
    raise NotImplementedError(op.kind)


def _feeds(g: Graph) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(0)
    return {id(v): rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs}


def run_reference(g: Graph) -> list[np.ndarray]:
    env = _feeds(g)
    for op in g.ops:
        env[id(op.result)] = op.attrs["value"] if op.kind == "const" else _compute(op, [env[id(a)] for a in op.operands])
    return [env[id(v)].copy() for v in g.outputs]


def run_in_arena(g: Graph) -> list[np.ndarray]:
    """Run `g` with every planned value living in one arena at its offset:
    view ops write nothing (they must already see their operand's bytes), other
    ops write their result into the arena, elementwise ones through ``out=`` as an
    in-place kernel would."""
    arena = bytearray(g.attrs["arena_bytes"])
    env = _feeds(g)
    offsets: dict[int, int] = {}

    def read(v: Value) -> np.ndarray:
        if id(v) in offsets:
            t = v.type
            return np.frombuffer(arena, t.dtype.numpy, t.numel, offsets[id(v)]).reshape(t.shape)
        return env[id(v)]

    for op in g.ops:
        if op.kind == "const":
            env[id(op.result)] = op.attrs["value"]
            continue
        args = [read(a) for a in op.operands]
        off = op.attrs["offsets"][0]
        if off < 0:
            env[id(op.result)] = _compute(op, args)
            continue
        offsets[id(op.result)] = off
        if op.kind in VIEWS and op.attrs["offsets"][0] == offsets.get(id(op.operands[0])):
            continue
        dst = read(op.result)
        if op.kind in BINARY:
            BINARY[op.kind](args[0], args[1], out=dst)
        else:
            dst[...] = _compute(op, args)
    return [read(v).copy() for v in g.outputs]


# -- plan analysis, independent of the pass's own bookkeeping --------------------
def live_ranges(g: Graph) -> dict[int, tuple[int, int]]:
    """value id -> (defining step, last step it is needed); outputs to len(ops)."""
    pos = {id(op): i for i, op in enumerate(g.ops)}
    outs = {id(v) for v in g.outputs}
    rng = {}
    for i, op in enumerate(g.ops):
        for r in op.results:
            last = max([pos[id(u.op)] for u in r.uses], default=i)
            rng[id(r)] = (i, len(g.ops) if id(r) in outs else last)
    return rng


def concat_slices(op: Op) -> list[tuple[Value, int, int]]:
    """(operand, byte offset, nbytes) of each operand's slice in a Concat's result,
    when the slices are byte ranges (every dim before the axis is 1); else []."""
    t = op.result.type
    if any(d != 1 for d in t.shape[: op.attrs["axis"]]):
        return []
    out, pos = [], op.attrs["offsets"][0]
    for v in op.operands:
        out.append((v, pos, v.type.nbytes))
        pos += v.type.nbytes
    return out


def alias_groups(g: Graph) -> dict[int, int]:
    """value id -> group id, joining a view result or an in-place result with the
    operand at the same offset, and a Concat with the operands that sit in their
    slices of it (the aliases the plan creates on purpose)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    off = {id(r): o for op in g.ops for r, o in zip(op.results, op.attrs.get("offsets", ()))}
    for op in g.ops:
        if op.kind in VIEWS or op.attrs.get("inplace"):
            for a in op.operands:
                if a is not None and off.get(id(a), -1) >= 0 and off.get(id(a)) == off[id(op.result)]:
                    parent[find(id(op.result))] = find(id(a))
        elif op.kind == "Concat" and off.get(id(op.result), -1) >= 0:
            for a, pos, _ in concat_slices(op):
                if off.get(id(a)) == pos:
                    parent[find(id(op.result))] = find(id(a))
    return {k: find(k) for k in off}
