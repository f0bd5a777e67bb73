"""The SoC cost model: estimated cycles and latency per op and per graph.

Three engines, three formulas (all SoC numbers come from `passes.target.soc`):

- **Cube** — the op as a GEMM ``[M, K] x [K, N]`` (times a batch / group count).
  Compute is the number of Cube instructions: every dim padded to the dtype's
  fractal (16x16x16 fp16, 16x32x16 int8), divided over the cores that have an
  output block to work on (K-tiles of one block accumulate serially in L0C), plus
  a per-tile overhead and a setup cost.  Memory is what the tile plan moves:
  operand A is streamed once per column of tiles, B once per row of tiles.
- **Vector** — ``elements / lanes / cores`` (lanes = vector bytes per cycle /
  itemsize; a matmul on Vector counts its MACs divided by the SoC's Vector
  matmul efficiency) plus bytes / DDR bandwidth.
- **AICPU** — launch overhead, a DDR round trip of every operand and result,
  and the Vector compute time times the seed's ~50x slowdown.

Symbolic dims (a dynamic batch ``N``) count as 1.  Views cost nothing.

    estimate(graph, load_soc("Ascend310P3"))
    {"total_ms": 0.43, "per_op": [{"op": "y", "kind": "MatMul", "engine": "cube", "ms": 0.21}, ...]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from passes.target.soc import Soc, load_soc
from ir.core import Graph, Op, Value
from ir.registry import CUBE, VIEW, lookup
from ir.types import DType, TensorType

__all__ = ["ENGINES", "Gemm", "OpCost", "cube_dtype", "estimate", "gemm_dims", "op_seconds"]

ENGINES = ("cube", "vector", "aicpu")

Dim = int | str


def _prod(dims: list[Dim]) -> Dim:
    """Product of dims; symbolic factors keep the result symbolic (``"N*3136"``)."""
    p = 1
    syms: list[str] = []
    for d in dims:
        if isinstance(d, int):
            p *= d
        else:
            syms.append(str(d))
    if not syms:
        return p
    return "*".join(syms + ([str(p)] if p != 1 else []))


def _num(d: Dim) -> int:
    """A dim as a number for cost purposes: symbols count as 1."""
    if isinstance(d, int):
        return d
    return math.prod(int(t) for t in str(d).split("*") if t.isdigit())


@dataclass(frozen=True)
class Gemm:
    """A Cube op seen as ``batch`` GEMMs of ``[m, k] x [k, n]``."""

    kind: str  # "matmul" | "conv" | "conv_transpose"
    batch: Dim
    m: Dim
    k: Dim
    n: Dim
    dtype: DType  # the input (operand 0) element type

    @property
    def dims(self) -> tuple[Dim, Dim, Dim]:
        return self.m, self.k, self.n

    @property
    def label(self) -> str:
        return "x".join(str(d) for d in (self.m, self.k, self.n))

    @property
    def macs(self) -> int:
        return _num(self.batch) * _num(self.m) * _num(self.k) * _num(self.n)


def _type(v: Value | None) -> TensorType | None:
    return None if v is None else v.type


def gemm_dims(op: Op) -> Gemm | None:
    """The GEMM a Cube op performs, or None if it is not a Cube op.

    MatMul-like (MatMul, MatMulInteger, Gemm, fused.matmul_*, quant.matmul):
    ``a: [..., M, K]``, ``b: [..., K, N]`` (Gemm's transA/transB honoured).
    Conv-like (Conv, fused.conv, quant.conv) as implicit GEMM:
    ``M = N*OH*OW, K = C/g*KH*KW, N = OC/g``, batch = groups.
    ConvTranspose: ``M = N*H*W, K = C/g, N = OC/g*KH*KW`` (col2im after).
    """
    d = lookup(op.kind)
    if d is None or not d.has(CUBE) or len(op.operands) < 2:
        return None
    a, b = _type(op.operands[0]), _type(op.operands[1])
    if a is None or b is None or not op.results:
        return None
    kind = op.kind.lower()
    group = int(op.attrs.get("group", 1) or 1)
    if "conv" in kind and "transpose" in kind:
        x, w = a.shape, b.shape
        if len(x) < 3 or len(w) < 3:
            return None
        return Gemm("conv_transpose", group, _prod([x[0], *x[2:]]), _div(x[1], group),
                    _prod([w[1], *w[2:]]), a.dtype)
    if "conv" in kind:
        x, w, y = a.shape, b.shape, op.results[0].type.shape
        if len(x) < 3 or len(w) < 3 or len(y) < 3:
            return None
        return Gemm("conv", group, _prod([y[0], *y[2:]]), _prod(list(w[1:])), _div(w[0], group), a.dtype)
    sa, sb = list(a.shape), list(b.shape)
    if op.kind == "Gemm":
        if len(sa) != 2 or len(sb) != 2:
            return None
        m, k = (sa[1], sa[0]) if op.attrs.get("transA") else (sa[0], sa[1])
        n = sb[0] if op.attrs.get("transB") else sb[1]
        return Gemm("matmul", 1, m, k, n, a.dtype)
    if not sa or not sb:
        return None
    if len(sa) == 1:
        sa = [1] + sa
    if len(sb) == 1:
        sb = sb + [1]
    batch = _broadcast_batch(sa[:-2], sb[:-2])
    return Gemm("matmul", _prod(batch), sa[-2], sa[-1], sb[-1], a.dtype)


def _div(d: Dim, g: int) -> Dim:
    return d // g if isinstance(d, int) else (d if g == 1 else f"{d}/{g}")


def _broadcast_batch(x: list[Dim], y: list[Dim]) -> list[Dim]:
    n = max(len(x), len(y))
    x = [1] * (n - len(x)) + x
    y = [1] * (n - len(y)) + y
    return [b if a == 1 else a for a, b in zip(x, y)]


def cube_dtype(soc: Soc, dtype: DType) -> str | None:
    """The dtype the Cube computes `dtype` in: itself if supported, f16 for
    f32/bf16 on a Cube without them (ATC's default fp16 conversion), else None."""
    if soc.cube_supports(dtype.value):
        return dtype.value
    if dtype.is_float and soc.cube_supports("f16"):
        return "f16"
    return None


def _nbytes(t: TensorType | None) -> int:
    if t is None:
        return 0
    return math.prod(_num(d) for d in t.shape) * t.dtype.itemsize


def _numel(t: TensorType | None) -> int:
    return 0 if t is None else math.prod(_num(d) for d in t.shape)


def _io_bytes(op: Op) -> int:
    return sum(_nbytes(_type(v)) for v in op.operands) + sum(_nbytes(r.type) for r in op.results)


@dataclass(frozen=True)
class OpCost:
    engine: str
    seconds: float
    cycles: int


def _tile_plan(op: Op, g: Gemm) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    m, k, n = (_num(d) for d in g.dims)
    tile = op.attrs.get("tile")
    if tile and len(tile) == 3:
        tm, tn, tk = (max(1, int(t)) for t in tile)
    else:
        tm, tn, tk = max(1, m), max(1, n), max(1, k)
    return (tm, tn, tk), (math.ceil(m / tm), math.ceil(n / tn), math.ceil(k / tk))


def _cube_seconds(op: Op, soc: Soc, g: Gemm) -> tuple[float, int]:
    dt = cube_dtype(soc, g.dtype) or "f16"
    fm, fk, fn = soc.cube_fractal[dt]
    m, k, n = (_num(d) for d in g.dims)
    batch = _num(g.batch)
    fractals = batch * math.ceil(m / fm) * math.ceil(k / fk) * math.ceil(n / fn)
    _, (nm, nn, nk) = _tile_plan(op, g)
    blocks = batch * nm * nn  # independent output blocks, spread over the cores
    cores = max(1, min(soc.ai_cores, blocks))
    cycles = (fractals * soc.cube_cycles_per_fractal + blocks * nk * soc.cube_tile_overhead_cycles) / cores
    cycles += soc.cube_setup_cycles
    a_bytes, b_bytes = _nbytes(_type(op.operands[0])), _nbytes(_type(op.operands[1]))
    rest = sum(_nbytes(_type(v)) for v in op.operands[2:]) + sum(_nbytes(r.type) for r in op.results)
    moved = a_bytes * nn + b_bytes * nm + rest
    seconds = soc.kernel_launch_s + cycles / soc.clock_hz + moved / soc.ddr_bandwidth
    return seconds, int(cycles)


def _vector_work(op: Op, soc: Soc) -> float:
    g = gemm_dims(op)
    if g is not None:  # a matmul on Vector: MACs at the Vector's matmul efficiency
        return g.macs / soc.vector_matmul_efficiency
    return max([_numel(_type(v)) for v in op.operands] + [_numel(r.type) for r in op.results] + [1])


def _vector_compute(op: Op, soc: Soc) -> float:
    """Vector-unit cycles for `op` (no launch, no memory)."""
    t = _type(op.operands[0]) if op.operands and op.operands[0] is not None else op.results[0].type
    lanes = soc.vector_lanes(t.dtype.itemsize if t is not None else 4)
    return soc.vector_setup_cycles + math.ceil(_vector_work(op, soc) / lanes) / soc.ai_cores


def op_seconds(op: Op, soc: Soc, engine: str) -> OpCost:
    """Estimated latency of `op` on `engine`."""
    d = lookup(op.kind)
    if d is not None and d.has(VIEW):
        return OpCost(engine, 0.0, 0)
    if engine == "cube":
        g = gemm_dims(op)
        if g is None:
            raise ValueError(f"{op.kind} is not a Cube op")
        s, c = _cube_seconds(op, soc, g)
        return OpCost(engine, s, c)
    vcycles = _vector_compute(op, soc)
    io = _io_bytes(op)
    if engine == "vector":
        s = soc.kernel_launch_s + vcycles / soc.clock_hz + io / soc.ddr_bandwidth
        return OpCost(engine, s, int(vcycles))
    if engine == "aicpu":
        s = soc.aicpu_launch_s + 2 * io / soc.ddr_bandwidth + soc.aicpu_slowdown * vcycles / soc.clock_hz
        return OpCost(engine, s, int(s * soc.clock_hz))
    raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")


def estimate(graph: Graph, soc: Soc | str | None = None) -> dict[str, Any]:
    """Estimated latency of a graph: ops run one after another on their engine
    (``engine`` attr, or what the place pass would choose if it has not run)."""
    if not isinstance(soc, Soc):
        soc = load_soc(soc)
    from passes.place import decide  # placement policy lives with the pass

    per_op = []
    total = 0.0
    for op in graph.ops:
        if op.kind == "const":
            continue
        engine = op.attrs.get("engine")
        if engine not in ENGINES:
            engine = decide(op, soc).engine
        try:
            cost = op_seconds(op, soc, engine)
        except ValueError:  # e.g. a forced "cube" on a non-Cube op: price it as Vector
            cost = op_seconds(op, soc, "vector")
        name = op.results[0].name if op.results else op.kind
        per_op.append({"op": name, "kind": op.kind, "engine": engine, "ms": cost.seconds * 1e3})
        total += cost.seconds
    return {"soc": soc.name, "total_ms": total * 1e3, "per_op": per_op}
