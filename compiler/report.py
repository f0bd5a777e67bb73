"""The compile report (DESIGN.md "What a compile reports"): one JSON-able dict,
written by ``--report=FILE``, stored in the `.om` header and printed by
``--mode=6``."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from ir.core import Graph
from ir.symbolic import parse_ranges, symbols
from passes.assign_buffers import arena_at
from passes.kv_cache import kv_cache_summary
from passes.place import estimate

__all__ = ["build_report", "format_summary"]


def _fallbacks(g: Graph) -> list[dict[str, str]]:
    out = []
    for op in g.ops:
        if op.attrs.get("engine") == "aicpu":
            out.append({"op": op.results[0].name if op.results else op.kind, "kind": op.kind,
                        "reason": str(op.attrs.get("reason", ""))})
    return out


def build_report(comp: Any, opts: Any, model_name: str) -> dict[str, Any]:
    g: Graph = comp.graph
    stats = comp.stats
    real_ops = [op for op in g.ops if op.kind != "const"]
    by_engine = Counter(op.attrs.get("engine", "unplaced") for op in real_ops)
    fusion = dict(stats.get("fusion", {}))
    tiling = {"tiled_ops": 0, "tiles": 0, **dict(stats.get("tiling", {}))}
    quant = {
        "quantized_ops": int(stats.get("quantization", {}).get("quantized_ops", 0)),
        "calibration": opts.calibration_method if opts.precision_mode == "allow_quantize" else None,
        "samples": int(stats.get("quantization", {}).get("samples", 0)),
    }
    memory = {
        "arena_bytes": int(g.attrs.get("arena_bytes", 0)),
        "lower_bound_bytes": int(g.attrs.get("lower_bound_bytes", 0)),
        "naive_bytes": int(g.attrs.get("naive_bytes", 0)),
        "weights_bytes": int(g.weights_bytes()),
        **kv_cache_summary(g),
    }
    memory["total_bytes"] = memory["weights_bytes"] + memory["arena_bytes"] + memory.get("kv_cache_bytes", 0)
    ddr = getattr(comp.soc, "ddr_bytes", None)
    if isinstance(ddr, int):
        memory["ddr_bytes"] = ddr
    est = estimate(g, comp.soc)
    dims = _dims(g)
    if dims:
        memory["planned_at"] = "the upper bound of every symbolic dim"
    out = {
        "model": model_name,
        "soc_version": getattr(comp.soc, "name", opts.soc_version),
        "precision_mode": opts.precision_mode,
        "ops": {
            "total": len(real_ops),
            "before_passes": comp.ops_before,
            "by_engine": {k: by_engine.get(k, 0) for k in ("cube", "vector", "aicpu")}
            | {k: v for k, v in by_engine.items() if k not in ("cube", "vector", "aicpu")},
            "by_kind": dict(sorted(Counter(op.kind for op in real_ops).items())),
        },
        "fallbacks": _fallbacks(g),
        "fusion": fusion,
        "tiling": tiling,
        "quantization": quant,
        "memory": memory,
        "estimated_latency_ms": round(float(est["total_ms"]), 6),
        "per_op_estimate": est.get("per_op", []),
        "passes": [{"name": p["name"], "seconds": round(p["seconds"], 6), "changed": bool(p["changed"])}
                   for p in comp.passes],
        "import_seconds": round(comp.import_seconds, 6),
    }
    if dims:
        out["dims"] = dims
    gears = g.attrs.get("dim_gears")
    if gears:
        out["gears"] = _gears(g, gears)
    return out


def _gears(g: Graph, gears: list) -> dict[str, Any]:
    """The gears, and per gear the arena a plan for it alone would take (the `.om`
    holds one plan, at the largest gear, which every gear runs in)."""
    syms, values = [str(s) for s in gears[0]], gears[1:]
    per = [{"values": dict(zip(syms, v)), "arena_bytes": arena_at(g, {s: (x, x) for s, x in zip(syms, v)})}
           for v in values]
    return {"dims": syms, "values": [list(v) for v in values], "per_gear": per}


def _dims(g: Graph) -> dict[str, Any]:
    """The symbolic dims of the inputs, with the ranges the plan assumes (None: unbounded)."""
    ranges = parse_ranges(g.attrs.get("dim_ranges"))
    names = sorted({s for v in g.inputs for d in v.type.shape for s in symbols(d)})
    return {n: list(ranges[n]) if n in ranges else None for n in names}


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def format_summary(report: dict[str, Any]) -> str:
    """Human-readable summary (``atcpy --mode=6`` and ``--mode=3``)."""
    ops = report.get("ops", {})
    mem = report.get("memory", {})
    lines = [
        f"model            {report.get('model')}",
        f"soc_version      {report.get('soc_version')}",
        f"precision_mode   {report.get('precision_mode')}",
        f"ops              {ops.get('total')} ({', '.join(f'{k} {v}' for k, v in ops.get('by_engine', {}).items())})",
        f"fusion           {json.dumps(report.get('fusion', {}), sort_keys=True)}",
        f"tiling           {report.get('tiling', {}).get('tiled_ops', 0)} ops in {report.get('tiling', {}).get('tiles', 0)} tiles",
        f"quantized ops    {report.get('quantization', {}).get('quantized_ops', 0)}",
        f"weights          {_mib(mem.get('weights_bytes', 0))}",
        (f"arena            {_mib(mem.get('arena_bytes', 0))} (lower bound {_mib(mem.get('lower_bound_bytes', 0))},"
        f" naive {_mib(mem.get('naive_bytes', 0))})"),
    ]
    if mem.get("kv_cache_bytes"):
        lines.append(f"kv cache         {_mib(mem['kv_cache_bytes'])} at max_len {mem.get('kv_cache_max_len')} "
                     f"({mem.get('kv_cache_bytes_per_token', 0) / 1024:.1f} KiB per token)")
    if "total_bytes" in mem:
        ddr = f" of {mem['ddr_bytes'] / 2**30:.1f} GiB DDR" if mem.get("ddr_bytes") else ""
        lines.append(f"total            {_mib(mem['total_bytes'])}{ddr} (weights + arena + kv cache)")
    gears = report.get("gears")
    if gears:
        lines.append(f"gears            {len(gears['values'])} of {', '.join(gears['dims'])}; one plan at the largest")
        for gear in gears["per_gear"]:
            vals = ", ".join(f"{k}={v}" for k, v in gear["values"].items())
            lines.append(f"  {vals:<24} alone would need an arena of {_mib(gear['arena_bytes'])}")
    for name, rng in report.get("dims", {}).items():
        lines.append(f"dim              {name}: {f'{rng[0]}~{rng[1]}' if rng else 'unbounded (not planned)'}")
    if report.get("estimated_latency_ms") is not None:
        lines.append(f"est. latency     {report['estimated_latency_ms']:.3f} ms")
    fb = report.get("fallbacks", [])
    if fb:
        lines.append(f"aicpu fallbacks  {len(fb)}")
        for f in fb[:20]:
            lines.append(f"  {f['kind']:<24} %{f['op']}: {f['reason']}")
        if len(fb) > 20:
            lines.append(f"  ... and {len(fb) - 20} more")
    return "\n".join(lines)
