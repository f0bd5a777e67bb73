"""place: put every op on the Cube, the Vector unit or the AICPU.

The choice follows what the SoC supports, in ATC's fallback order
Cube -> Vector -> AICPU, and keeps the reason on the op:

- a Cube op (MatMul, Gemm, Conv, fused.*, quant.matmul/conv) goes to the Cube
  if the Cube takes its dtype — f32 runs there as f16 on a Cube without f32
  (``op_select_implmode=high_performance``, ATC's default) or falls back to
  Vector (``high_precision``) — unless the cost model says Vector is cheaper
  (tiny matmuls: fractal padding and Cube setup dominate);
- an op with a Vector kernel on this SoC (``vector.ops`` in the SoC file) and a
  dtype the Vector unit takes goes to Vector; views are zero-copy (Vector, 0 cost);
- everything else goes to the AICPU: opaque ONNX ops (kinds the registry does
  not declare), ops without a Vector kernel, and ops whose output shape depends
  on data (a ``?`` dim or the ``shape_from_data`` trait).

Per-op-type overrides (``overrides="Softmax=aicpu,MatMul=vector"``) win when the
engine can run the op; otherwise a diagnostic says why they were ignored.

    %y = MatMul(%a, %b) : (tensor<4096x128xf32>, tensor<128x4096xf32>) -> tensor<4096x4096xf32>
    %i = TopK(%y, %k) : ...
    // place ==>
    %y = MatMul(%a, %b) {cost_cycles = 70912, engine = "cube", reason = "matmul 4096x128x4096 f32 -> cube (as f16)"} : ...
    %i = TopK(%y, %k) {engine = "aicpu", reason = "TopK: opaque ONNX op, no AI Core kernel -> aicpu", ...} : ...

Statistics: ``engines.<engine>`` per placed op.  Fallbacks are logged at INFO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ir.core import Graph, Op
from ir.registry import CUBE, ENGINES, HOST, SHAPE_FROM_DATA, SHAPE_PROGRAM, VECTOR, VIEW, gemm_dims, lookup
from ir.types import DType
from passes.base import Pass, PassContext, PassError, register
from passes.target.cost import cube_dtype, op_seconds
from passes.target.soc import Soc, load_soc

__all__ = ["IMPLMODES", "Decision", "PlacePass", "decide", "estimate", "parse_overrides"]

IMPLMODES = ("high_performance", "high_precision")


@dataclass(frozen=True)
class Decision:
    engine: str
    reason: str
    seconds: float = 0.0
    fallback: bool = False  # not the engine the op would naturally run on


def _dtype_name(dt: DType) -> str:
    return {"i8": "int8", "u8": "uint8"}.get(dt.value, dt.value)


def _main_dtype(op: Op) -> DType:
    for v in op.operands:
        if v is not None:
            return v.type.dtype
    return op.results[0].type.dtype if op.results else DType.f32


def _label(op: Op) -> str:
    d = lookup(op.kind)
    return d.label if d is not None else op.kind


def parse_overrides(text: str | dict | None) -> dict[str, str]:
    """``"Softmax=aicpu,MatMul=vector"`` -> ``{"Softmax": "aicpu", "MatMul": "vector"}``."""
    if not text:
        return {}
    if isinstance(text, dict):
        items = list(text.items())
    else:
        items = []
        for part in re.split(r"[,;\s]+", str(text)):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise PassError(f"place: override {part!r} is not KIND=ENGINE")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    out = {}
    for k, v in items:
        if v not in ENGINES:
            raise PassError(f"place: override {k}={v}: engine must be one of {', '.join(ENGINES)}")
        out[k] = v
    return out


def _data_dependent(op: Op) -> bool:
    d = lookup(op.kind)
    if d is not None and d.has(SHAPE_FROM_DATA):
        return True
    return any(dim == "?" for r in op.results for dim in r.type.shape)


def _candidates(op: Op, soc: Soc, implmode: str) -> dict[str, str]:
    """Engines that can run `op`, each with the reason it can."""
    d = lookup(op.kind)
    dt = _main_dtype(op)
    cands: dict[str, str] = {}
    g = gemm_dims(op)
    if d is not None and d.runs_on(CUBE) and g is not None:
        cdt = cube_dtype(soc, dt)
        if cdt == dt.value:
            cands["cube"] = f"{_label(op)} {g.label} {_dtype_name(dt)} -> cube"
        elif cdt is not None and implmode == "high_performance":
            cands["cube"] = f"{_label(op)} {g.label} {_dtype_name(dt)} -> cube (as {cdt})"
    if d is not None and d.runs_on(VECTOR) and soc.vector_runs(op.kind, dt.value):
        cands["vector"] = f"{op.kind} {_dtype_name(dt)} -> vector"
    cands["aicpu"] = f"{op.kind} -> aicpu"
    return cands


def decide(op: Op, soc: Soc, implmode: str = "high_performance", overrides: dict[str, str] | None = None,
           diagnostics: list[str] | None = None) -> Decision:
    """Where `op` runs on `soc`, and why."""
    d = lookup(op.kind)
    if d is not None and d.has(SHAPE_PROGRAM):
        return Decision(HOST, f"{op.kind}: shape program, evaluated from the input dims -> host")
    if d is not None and d.has(VIEW) and op.kind not in (overrides or {}):
        return Decision("vector", f"{op.kind}: view, zero-copy -> vector")
    cands = _candidates(op, soc, implmode)
    want = (overrides or {}).get(op.kind)
    if want is not None:
        if want in cands:
            return Decision(want, f"{op.kind}: override -> {want}", _secs(op, soc, want))
        if diagnostics is not None:
            diagnostics.append(f"place: override {op.kind}={want} ignored: {soc.name} cannot run {op.kind} "
                               f"({_dtype_name(_main_dtype(op))}) on {want}")
    if d is None:
        return Decision("aicpu", f"{op.kind}: opaque ONNX op, no AI Core kernel -> aicpu",
                        _secs(op, soc, "aicpu"), fallback=True)
    if _data_dependent(op):
        return Decision("aicpu", f"{op.kind}: output shape depends on data -> aicpu", _secs(op, soc, "aicpu"),
                        fallback=True)
    dt = _dtype_name(_main_dtype(op))
    if "cube" in cands:
        cube_s = _secs(op, soc, "cube")
        if "vector" in cands:
            vec_s = _secs(op, soc, "vector")
            if vec_s < cube_s:
                g = gemm_dims(op)
                label = g.label if g is not None else ""
                return Decision("vector", f"{_label(op)} {label} {dt} -> vector (cheaper than cube: "
                                          f"{vec_s * 1e6:.2f}us vs {cube_s * 1e6:.2f}us)", vec_s)
        return Decision("cube", cands["cube"], cube_s)
    if d.runs_on(CUBE) and "vector" in cands:
        why = "high_precision keeps f32" if implmode == "high_precision" else f"no {dt} cube"
        g = gemm_dims(op)
        label = f" {g.label}" if g is not None else ""
        return Decision("vector", f"{_label(op)}{label} {dt}: {why} -> vector", _secs(op, soc, "vector"),
                        fallback=True)
    if "vector" in cands:
        return Decision("vector", cands["vector"], _secs(op, soc, "vector"))
    if d.runs_on(VECTOR) and op.kind not in soc.vector_unsupported:
        reason = f"{op.kind}: {dt} not supported on vector -> aicpu"
    elif d.runs_on(CUBE):
        reason = f"{_label(op)} {dt}: no cube or vector kernel -> aicpu"
    else:
        reason = f"{op.kind}: no vector kernel -> aicpu"
    return Decision("aicpu", reason, _secs(op, soc, "aicpu"), fallback=True)


def _secs(op: Op, soc: Soc, engine: str) -> float:
    try:
        return op_seconds(op, soc, engine).seconds
    except ValueError:
        return 0.0


def estimate(graph: Graph, soc: Soc | str | None = None) -> dict[str, Any]:
    """Estimated latency of a graph: ops run one after another on their engine
    (``engine`` attr, or what the place pass would choose if it has not run)."""
    if not isinstance(soc, Soc):
        soc = load_soc(soc)
    per_op = []
    total = 0.0
    for op in graph.ops:
        if op.kind == "const":
            continue
        engine = op.attrs.get("engine")
        if engine not in (*ENGINES, HOST):
            engine = decide(op, soc).engine
        try:
            cost = op_seconds(op, soc, engine)
        except ValueError:  # e.g. a forced "cube" on a non-Cube op: price it as Vector
            cost = op_seconds(op, soc, "vector")
        name = op.results[0].name if op.results else op.kind
        per_op.append({"op": name, "kind": op.kind, "engine": engine, "ms": cost.seconds * 1e3})
        total += cost.seconds
    return {"soc": soc.name, "total_ms": total * 1e3, "per_op": per_op}


@register
@dataclass
class PlacePass(Pass):
    name: ClassVar[str] = "place"
    op_select_implmode: str = ""  # "" -> ctx.options.op_select_implmode or high_performance
    overrides: str = ""  # "Softmax=aicpu,MatMul=vector"; merged over ctx.options.op_engine

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        soc = ctx.soc if isinstance(ctx.soc, Soc) else load_soc(ctx.soc if isinstance(ctx.soc, str) else None)
        implmode = self.op_select_implmode or ctx.options.op_select_implmode or "high_performance"
        if implmode not in IMPLMODES:
            raise PassError(f"place: op_select_implmode must be one of {', '.join(IMPLMODES)}, got {implmode!r}")
        overrides = parse_overrides(ctx.options.op_engine)
        overrides.update(parse_overrides(self.overrides))
        changed = False
        for op in graph.ops:
            if op.kind == "const":
                continue
            dec = decide(op, soc, implmode, overrides, ctx.diagnostics)
            new = {"engine": dec.engine, "reason": dec.reason, "cost_cycles": round(dec.seconds * soc.clock_hz)}
            if any(op.attrs.get(k) != v for k, v in new.items()):
                op.attrs.update(new)
                changed = True
            ctx.count("engines", dec.engine)
            if dec.fallback:
                name = op.results[0].name if op.results else op.kind
                ctx.log.info("place: %%%s %s", name, dec.reason)
        return changed
