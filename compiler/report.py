"""The compile report (DESIGN.md "What a compile reports"): one JSON-able dict,
written by ``--report=FILE``, stored in the `.om` header and printed by
``--mode=6``."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from ir.core import Graph
from ir.symbolic import parse_ranges, symbols
from ir.types import DType
from passes._budget import budget
from passes.assign_buffers import arena_at, outside_bytes
from passes.kv_cache import kv_cache_summary
from passes.place import estimate

__all__ = ["build_report", "format_memory", "format_summary", "memory_plan"]


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
    qstats = stats.get("quantization", {})
    if getattr(opts, "quant_type", None):  # weight-only (quantize-weights)
        quant.update({"quant_type": opts.quant_type, "weight_group_size": int(opts.weight_group_size),
                      **{k: int(qstats.get(k, 0)) for k in ("weight_only_ops", "weight_only_tables")}})
    memory = memory_plan(g, comp.soc, getattr(opts, "mem_limit", None))
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


def memory_plan(g: Graph, soc: Any, mem_limit: int | None = None) -> dict[str, Any]:
    """The memory the plan needs, by source, against the budget: weights (and by
    dtype), the activation arena, the KV cache at its bounds, outputs of ops kept
    out of the arena; their total; the budget (DDR or ``mem_limit``), whether the
    total fits and by how much (``margin_bytes`` < 0: over).  Read from sizes
    (``nbytes``), so a plan of unread weights (placeholders, mapped files) costs nothing."""
    by_dtype: Counter[str] = Counter()
    for op in g.ops:
        if op.kind == "const":
            a = op.attrs["value"]
            by_dtype[_dtype_name(a)] += int(a.nbytes)
    memory: dict[str, Any] = {
        "arena_bytes": int(g.attrs.get("arena_bytes", 0)),
        "lower_bound_bytes": int(g.attrs.get("lower_bound_bytes", 0)),
        "naive_bytes": int(g.attrs.get("naive_bytes", 0)),
        "weights_bytes": int(sum(by_dtype.values())),
        "weights_by_dtype": dict(sorted(by_dtype.items())),
        **kv_cache_summary(g),
    }
    outside = outside_bytes(g)
    if outside:
        memory["outside_arena_bytes"] = outside
    memory["total_bytes"] = (memory["weights_bytes"] + memory["arena_bytes"] + memory.get("kv_cache_bytes", 0)
                             + outside)
    ddr = getattr(soc, "ddr_bytes", None)
    if isinstance(ddr, int):
        memory["ddr_bytes"] = ddr
    limit = budget(soc, mem_limit)
    if limit is not None:
        memory["budget_bytes"], memory["budget"] = limit
        memory["margin_bytes"] = limit[0] - memory["total_bytes"]
        memory["fits"] = memory["margin_bytes"] >= 0
    return memory


def _dtype_name(a: Any) -> str:
    try:
        return DType.from_numpy(a.dtype).value
    except (TypeError, KeyError, ValueError):
        return str(a.dtype)


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


def _size(n: int) -> str:
    """``"7.06 GiB (7584890880 bytes)"``, aligned for the memory table."""
    unit, scale = next(((u, k) for u, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)) if abs(n) >= k),
                       ("B", 1))
    return f"{n / scale:>8.2f} {unit:<3} ({n} bytes)"


def _bounds(report: dict[str, Any]) -> str:
    dims = {k: v for k, v in (report.get("dims") or {}).items() if v}
    return ", ".join(f"{k}={v[1]}" for k, v in dims.items())


def format_memory(report: dict[str, Any]) -> list[str]:
    """The memory table: each source of memory, the total against the budget, a verdict."""
    mem = report.get("memory", {})
    at = _bounds(report)
    open_dims = [k for k, v in (report.get("dims") or {}).items() if not v]
    where = f"at {at} (the upper bounds)" if at else ("" if open_dims else "static shapes")
    if open_dims:
        where += (("; " if where else "") + f"tensors sized by {', '.join(open_dims)} not counted "
                  "(unbounded: give --dim_range)")
    lines = [f"memory           {where}" + ("; weights not read (sizes only)" if mem.get("weights_read") is False else "")]
    by = mem.get("weights_by_dtype") or {}
    lines.append(f"  weights        {_size(mem.get('weights_bytes', 0))}"
                 + ("  " + ", ".join(f"{k} {_size(v).split('(')[0].strip()}" for k, v in by.items()) if by else ""))
    if mem.get("kv_cache_bytes"):
        lines.append(f"  KV cache       {_size(mem['kv_cache_bytes'])}  max_len {mem.get('kv_cache_max_len')}, "
                     f"{mem.get('kv_cache_bytes_per_token', 0) / 1024:.1f} KiB per token")
    lines.append(f"  activations    {_size(mem.get('arena_bytes', 0))}  arena (lower bound "
                 f"{_mib(mem.get('lower_bound_bytes', 0))}, naive {_mib(mem.get('naive_bytes', 0))})")
    if mem.get("outside_arena_bytes"):
        lines.append(f"  outside arena  {_size(mem['outside_arena_bytes'])}  results of AICPU/opaque ops")
    if "total_bytes" in mem:
        lines.append(f"  total          {_size(mem['total_bytes'])}")
    if "budget_bytes" in mem:
        margin = int(mem["margin_bytes"])
        lines.append(f"  budget         {_size(mem['budget_bytes'])}  {mem.get('budget')}")
        verdict = (f"fits, {_size(margin).strip()} to spare" if margin >= 0
                   else f"does not fit, {_size(-margin).strip()} over")
        if open_dims:
            verdict += " (without what the unbounded dims need)"
        lines.append(f"verdict          {verdict}")
    return lines


def _quantized(q: dict[str, Any]) -> str:
    text = str(q.get("quantized_ops", 0))
    if q.get("quant_type"):
        text += (f" (+ {q.get('weight_only_ops', 0)} MatMuls and {q.get('weight_only_tables', 0)} tables "
                 f"{q['quant_type']}, groups of {q.get('weight_group_size')})")
    return text


def _accuracy_target(t: dict[str, Any] | None) -> list[str]:
    """--accuracy_target's lines: what it reached and the layers it kept in float."""
    if not t:
        return []
    kept = list(t.get("kept_in_float", []))
    shown = ", ".join(kept[:10]) + (f", ... ({len(kept) - 10} more)" if len(kept) > 10 else "")
    head = (f"accuracy target  {t.get('target')!r}: output cosine {t.get('cosine', 0):.6f} on "
            f"{t.get('held_back')} held-back samples, {t.get('rolled_back')} layer(s) in float after "
            f"{t.get('iterations')} iteration(s)")
    return [head] + ([f"  kept in float  {shown}"] if kept else [])


def format_summary(report: dict[str, Any]) -> str:
    """Human-readable summary (``atcpy --mode=6`` and ``--mode=3``)."""
    ops = report.get("ops", {})
    lines = [
        f"model            {report.get('model')}",
        f"soc_version      {report.get('soc_version')}",
        f"precision_mode   {report.get('precision_mode')}",
        f"ops              {ops.get('total')} ({', '.join(f'{k} {v}' for k, v in ops.get('by_engine', {}).items())})",
        f"fusion           {json.dumps(report.get('fusion', {}), sort_keys=True)}",
        f"tiling           {report.get('tiling', {}).get('tiled_ops', 0)} ops in {report.get('tiling', {}).get('tiles', 0)} tiles",
        f"quantized ops    {_quantized(report.get('quantization', {}))}",
        *_accuracy_target(report.get("accuracy_target")),
        *format_memory(report),
    ]
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
    if report.get("note"):
        lines.append(f"note             {report['note']}")
    fb = report.get("fallbacks", [])
    if fb:
        lines.append(f"aicpu fallbacks  {len(fb)}")
        for f in fb[:20]:
            lines.append(f"  {f['kind']:<24} %{f['op']}: {f['reason']}")
        if len(fb) > 20:
            lines.append(f"  ... and {len(fb) - 20} more")
    return "\n".join(lines)
