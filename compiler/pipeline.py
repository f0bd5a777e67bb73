"""The default pass pipeline per ``--precision_mode`` (the one place it is
defined) and `run_pipeline`, which runs a pipeline text through the pass
manager.

    run_pipeline(graph, default_pipeline("force_fp32"), ctx, verify_each=True)
    # -> [{"name": "canonicalize", "seconds": 0.012, "changed": True}, ...]

The precision modes differ in the passes after ``fuse``: ``quantize`` only
runs for ``allow_quantize``, ``cast-precision`` only for the fp16 modes (it
reads ``ctx.options.precision_mode`` to tell them apart).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ir.core import Graph
from passes import PASSES, PassContext
from passes.manager import PassManager, PassResult, split_pipeline
from passes.manager import format_timing as _format_timing

__all__ = ["DEFAULT_PIPELINES", "PRECISION_MODES", "default_pipeline", "format_timing", "run_pipeline"]

log = logging.getLogger("atcpy")

_FP32 = "canonicalize,cse,fuse,fuse-llm,fuse-attention,kv-cache,fuse-siblings,tile{size=256},place,assign-buffers"
# cast-precision reads the mode from ctx.options.precision_mode; it runs on
# fused ops, before tiling/placement so the casts it adds are placed too.
_FP16 = "canonicalize,cse,fuse,fuse-llm,fuse-attention,kv-cache,fuse-siblings,cast-precision,tile{size=256},place,assign-buffers"
DEFAULT_PIPELINES: dict[str, str] = {
    "force_fp32": _FP32,
    "must_keep_origin_dtype": _FP32,
    "force_fp16": _FP16,
    "allow_fp32_to_fp16": _FP16,
    "allow_quantize": "canonicalize,cse,fuse,fuse-llm,fuse-attention,kv-cache,fuse-siblings,tile{size=256},quantize,place,assign-buffers",
}
PRECISION_MODES = tuple(DEFAULT_PIPELINES)


def default_pipeline(precision_mode: str = "force_fp32", quant_type: str | None = None) -> str:
    """The default pipeline for `precision_mode`; a weight-only `quant_type` (W8A16,
    W4A16) adds ``quantize-weights`` after the fusions, before tiling.  Every pass in it
    is registered (a test checks it); one that is not is a bug, reported as an internal error."""
    from ir.errors import InternalError, UsageError

    if precision_mode not in DEFAULT_PIPELINES:
        raise UsageError(f"unknown --precision_mode {precision_mode!r}; supported: {', '.join(PRECISION_MODES)}")
    text = DEFAULT_PIPELINES[precision_mode]
    if quant_type in ("W8A16", "W4A16"):
        text = text.replace("fuse-siblings,", "fuse-siblings,quantize-weights,")
    missing = [item for item in split_pipeline(text) if item.partition("{")[0].strip() not in PASSES]
    if missing:
        raise InternalError(f"the default {precision_mode} pipeline names unregistered passes: {', '.join(missing)}")
    return text


def run_pipeline(
    graph: Graph,
    pipeline_text: str,
    ctx: PassContext | None = None,
    verify_each: bool = False,
    dump_dir: str | Path | None = None,
    timing: bool = False,
) -> list[dict[str, Any]]:
    """Run `pipeline_text` on `graph` in place; returns ``[{"name", "seconds", "changed"}]``.

    Raises `passes.manager.PipelineError` (a `UsageError`) for bad pipeline
    text and `passes.manager.PassFailure` when a pass fails.  With `timing`,
    the timing table is logged at INFO level."""
    pm = PassManager.parse(pipeline_text, verify_each=verify_each, dump_dir=dump_dir)
    ctx = ctx if ctx is not None else PassContext()
    results = pm.run(graph, ctx)
    if timing:
        ctx.log.info("%s", pm.timing_report())
    return results


def format_timing(results: list[dict[str, Any]] | list[PassResult]) -> str:
    """The MLIR-style timing table for a compile report's ``passes`` list."""
    rs = [r if isinstance(r, PassResult) else PassResult(r["name"], float(r["seconds"]), bool(r["changed"]))
          for r in results]
    return _format_timing(rs)
