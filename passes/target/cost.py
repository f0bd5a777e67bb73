"""The SoC cost model: estimated cycles and latency per op (`passes.place.estimate`
sums them over a placed graph).

Three engines, three formulas (all SoC numbers come from `passes.target.soc`):

- **Cube** — the op as a GEMM ``[M, K] x [K, N]`` (times a batch / group count).
  Compute is the number of Cube instructions: every dim padded to the dtype's
  fractal (16x16x16 fp16, 16x32x16 int8), divided over the cores that have an
  output block to work on (K-tiles of one block accumulate serially in L0C), plus
  a per-tile overhead and a setup cost.  Memory is what the tile plan moves:
  operand A is streamed once per column of tiles, B once per row of tiles.
  Vector work the GEMM view declares between the products (attention's
  softmax, ``vector_shape``) adds its Vector cycles.
- **Vector** — ``elements / lanes / cores`` (lanes = vector bytes per cycle /
  itemsize; a matmul on Vector counts its MACs divided by the SoC's Vector
  matmul efficiency) plus bytes / DDR bandwidth.
- **AICPU** — launch overhead, a DDR round trip of every operand and result,
  and the Vector compute time times the seed's ~50x slowdown.

A Cube op's GEMM comes from its declaration (`ir.registry.gemm_dims`).  Symbolic
dims are costed at their bounds (the graph's ``dim_ranges``); an unbounded one
counts as 1.  Views and the host-side shape program cost nothing.

    op_seconds(op, load_soc("Ascend310P3"), "cube")
    OpCost(engine="cube", seconds=2.1e-05, cycles=9000)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ir.core import Op, Value
from ir.gemm import Gemm, dim_value
from ir.registry import APPENDS, ENGINES, HOST, INDEXED_READ, VIEW, gemm_dims, lookup
from ir.symbolic import dim_bound, parse_ranges
from ir.types import DType, TensorType
from passes.target.soc import Soc

__all__ = ["OpCost", "cube_dtype", "op_seconds"]


Ranges = dict[str, tuple[int, int]]


def _ranges(op: Op) -> Ranges:
    return parse_ranges(op.graph.attrs.get("dim_ranges")) if op.graph is not None else {}


def _num(d, r: Ranges) -> int:
    """A dim as a number: its bound over the symbols' ranges (the size a plan and
    the cost are for), or, for an unbounded symbol, 1."""
    if isinstance(d, int):
        return d
    b = dim_bound(d, r) if r else None
    return b if b is not None else dim_value(d)


def _type(v: Value | None) -> TensorType | None:
    return None if v is None else v.type


def cube_dtype(soc: Soc, dtype: DType) -> str | None:
    """The dtype the Cube computes `dtype` in: itself if supported, f16 for
    f32/bf16 on a Cube without them (ATC's default fp16 conversion), else None."""
    if soc.cube_supports(dtype.value):
        return dtype.value
    if dtype.is_float and soc.cube_supports("f16"):
        return "f16"
    return None


def _nbytes(t: TensorType | None, r: Ranges) -> int:
    if t is None:
        return 0
    return math.prod(_num(d, r) for d in t.shape) * t.dtype.itemsize


def _numel(t: TensorType | None, r: Ranges) -> int:
    return 0 if t is None else math.prod(_num(d, r) for d in t.shape)


def _io_bytes(op: Op, r: Ranges) -> int:
    results = sum(_nbytes(x.type, r) for x in op.results)
    d = lookup(op.kind)
    if d is not None and d.has(INDEXED_READ):  # the picked elements and the indices, not the whole table
        picked = sum(_numel(x.type, r) for x in op.results)
        index = [t for t in map(_type, op.operands) if t is not None and t.dtype.is_int and _numel(t, r) <= picked]
        return 2 * results + sum(_nbytes(t, r) for t in index)  # an integer table (packed int4 rows) is not an index
    if d is not None and d.has(APPENDS):  # the new positions, read and written; the buffer stays where it is
        return 2 * _nbytes(_type(op.operands[-1]), r)
    return sum(_nbytes(_type(v), r) for v in op.operands) + results


@dataclass(frozen=True)
class OpCost:
    engine: str
    seconds: float
    cycles: int


def _tile_plan(op: Op, g: Gemm, r: Ranges) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    m, k, n = (_num(d, r) for d in g.dims)
    tile = op.attrs.get("tile")
    if tile and len(tile) == 3:
        tm, tn, tk = (max(1, int(t)) for t in tile)
    else:
        tm, tn, tk = max(1, m), max(1, n), max(1, k)
    return (tm, tn, tk), (math.ceil(m / tm), math.ceil(n / tn), math.ceil(k / tk))


def _cube_seconds(op: Op, soc: Soc, g: Gemm, r: Ranges) -> tuple[float, int]:
    dt = cube_dtype(soc, g.dtype) or "f16"
    fm, fk, fn = soc.cube_fractal[dt]
    m, k, n = (_num(d, r) for d in g.dims)
    batch = _num(g.batch, r)
    fractals = batch * math.ceil(m / fm) * math.ceil(k / fk) * math.ceil(n / fn)
    _, (nm, nn, nk) = _tile_plan(op, g, r)
    blocks = batch * nm * nn  # independent output blocks, spread over the cores
    cores = max(1, min(soc.ai_cores, blocks))
    cycles = (fractals * soc.cube_cycles_per_fractal + blocks * nk * soc.cube_tile_overhead_cycles) / cores
    cycles += soc.cube_setup_cycles
    a_bytes, b_bytes = _nbytes(_type(op.operands[0]), r), _nbytes(_type(op.operands[1]), r)
    rest = sum(_nbytes(_type(v), r) for v in op.operands[2:]) + sum(_nbytes(x.type, r) for x in op.results)
    moved = a_bytes * nn + b_bytes * nm + rest
    between = _vector_elements(g, r)
    if between:  # attention's softmax: the Vector's work between the Cube's two products
        cycles += soc.vector_setup_cycles + math.ceil(between / soc.vector_lanes(g.dtype.itemsize)) / soc.ai_cores
    seconds = soc.kernel_launch_s + cycles / soc.clock_hz + moved / soc.ddr_bandwidth
    return seconds, int(cycles)


def _vector_elements(g: Gemm, r: Ranges) -> int:
    """Elements of the Vector work a Cube op's GEMM view declares between its products
    (``vector_shape``: attention's row softmax, `ir.ops.attention`); 0 for a plain GEMM."""
    shape = getattr(g, "vector_shape", ())
    return math.prod(_num(d, r) for d in shape) if shape else 0


def _vector_work(op: Op, soc: Soc, r: Ranges) -> float:
    g = gemm_dims(op)
    if g is not None:  # a matmul on Vector: MACs at the Vector's matmul efficiency (+ attention's softmax)
        return math.prod(_num(d, r) for d in (g.batch, *g.dims)) / soc.vector_matmul_efficiency + _vector_elements(g, r)
    d = lookup(op.kind)
    if d is not None and d.has(INDEXED_READ):  # the elements picked, not the table
        return max(_numel(op.results[0].type, r), 1)
    if d is not None and d.has(APPENDS):  # the positions appended, not the buffer
        return max(_numel(_type(op.operands[-1]), r), 1)
    ops = op.operands
    return max([_numel(_type(v), r) for v in ops] + [_numel(x.type, r) for x in op.results] + [1])


def _vector_compute(op: Op, soc: Soc, r: Ranges) -> float:
    """Vector-unit cycles for `op` (no launch, no memory)."""
    t = _type(op.operands[0]) if op.operands and op.operands[0] is not None else op.results[0].type
    lanes = soc.vector_lanes(t.dtype.itemsize if t is not None else 4)
    return soc.vector_setup_cycles + math.ceil(_vector_work(op, soc, r) / lanes) / soc.ai_cores


def op_seconds(op: Op, soc: Soc, engine: str) -> OpCost:
    """Estimated latency of `op` on `engine`."""
    d = lookup(op.kind)
    if d is not None and d.has(VIEW):
        return OpCost(engine, 0.0, 0)
    if engine == HOST:  # the shape program: a few integer ops on the host, overlapped with the AI Core
        return OpCost(engine, 0.0, 0)
    r = _ranges(op)  # symbolic dims are costed at their bounds
    if engine == "cube":
        g = gemm_dims(op)
        if g is None:
            raise ValueError(f"{op.kind} is not a Cube op")
        s, c = _cube_seconds(op, soc, g, r)
        return OpCost(engine, s, c)
    vcycles = _vector_compute(op, soc, r)
    io = _io_bytes(op, r)
    if engine == "vector":
        s = soc.kernel_launch_s + vcycles / soc.clock_hz + io / soc.ddr_bandwidth
        return OpCost(engine, s, int(vcycles))
    if engine == "aicpu":
        s = soc.aicpu_launch_s + 2 * io / soc.ddr_bandwidth + soc.aicpu_slowdown * vcycles / soc.clock_hz
        return OpCost(engine, s, int(s * soc.clock_hz))
    raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
