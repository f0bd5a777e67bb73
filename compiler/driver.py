"""`compile_model`: ONNX model → IR → pipeline → executable, the one path the
CLI, the ONNX backend and the Python API share.

    exe = compile_model("resnet50.onnx", soc_version="Ascend310P3")
    exe.save("out/resnet50.om")
    Session(exe).run(None, {"data": x})
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from ir.errors import AtcError, InternalError, UsageError
from ir.core import Graph

__all__ = ["PRECISION_MODES", "Compilation", "CompileOptions", "compile_model", "lower_to_ir"]

log = logging.getLogger("atcpy")

PRECISION_MODES = ("force_fp32", "must_keep_origin_dtype", "force_fp16", "allow_fp32_to_fp16", "allow_quantize")


@dataclass
class CompileOptions:
    soc_version: str = "Ascend310P3"
    input_shapes: Mapping[str, Sequence[int]] | None = None
    out_nodes: Sequence[str] | None = None
    precision_mode: str = "force_fp32"
    passes: str | None = None  # overrides the default pipeline
    verify_each: bool = False
    dump_ir: str | None = None
    pass_timing: bool = False
    mem_limit: int | None = None
    calibration_data: str | None = None
    calibration_method: str = "percentile"
    calibration_percentile: float = 99.9
    keep_dtype: str | None = None
    op_select_implmode: str = "high_performance"
    op_engine: str | None = None  # "Softmax=aicpu,MatMul=vector"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.precision_mode not in PRECISION_MODES:
            raise UsageError(
                f"unknown --precision_mode={self.precision_mode}; choose one of {', '.join(PRECISION_MODES)}"
            )
        if self.calibration_method not in ("max", "percentile", "entropy"):
            raise UsageError(f"unknown --calibration_method={self.calibration_method}; choose max, percentile or entropy")
        if not 0 < self.calibration_percentile <= 100:
            raise UsageError(f"--calibration_percentile={self.calibration_percentile} must be in (0, 100]")


@dataclass
class Compilation:
    """What a compile produced besides the executable (for the report and tests)."""

    graph: Graph
    soc: Any
    stats: dict
    passes: list[dict]
    import_seconds: float
    ops_before: int


def _model_name(model: Any) -> str:
    if isinstance(model, (str, Path)):
        return Path(model).stem
    if isinstance(model, onnx.ModelProto) and model.graph.name:
        return model.graph.name
    return "model"


def _select_outputs(g: Graph, out_nodes: Sequence[str]) -> None:
    """ATC's --out_nodes: make the named tensors (``name`` or ``node:index``) the outputs."""
    chosen = []
    for spec in out_nodes:
        name = spec
        try:
            chosen.append(g.value(name))
            continue
        except KeyError:
            pass
        node, _, idx = spec.rpartition(":")
        match = [op for op in g.ops if op.attrs.get("name") == node] if idx.isdigit() else []
        if match and int(idx) < len(match[0].results):
            chosen.append(match[0].results[int(idx)])
            continue
        raise UsageError(f"--out_nodes: no tensor or node output named {spec!r} in the model")
    g.outputs = chosen
    g.erase_dead()


def lower_to_ir(model: Any, opts: CompileOptions) -> Graph:
    from compiler.frontend import import_onnx

    g = import_onnx(model, input_shapes=dict(opts.input_shapes) if opts.input_shapes else None)
    if opts.out_nodes:
        _select_outputs(g, opts.out_nodes)
    return g


def run_passes(g: Graph, opts: CompileOptions, soc: Any, model: Any = None) -> tuple[list[dict], dict]:
    from compiler.pipeline import default_pipeline, run_pipeline
    from passes.base import PassContext

    ctx = PassContext(soc=soc, options={
        "precision_mode": opts.precision_mode,
        "mem_limit": opts.mem_limit,
        "op_select_implmode": opts.op_select_implmode,
        "op_engine": opts.op_engine,
        "keep_dtype": opts.keep_dtype,
        **opts.extra,
    })
    if opts.precision_mode == "allow_quantize":
        from compiler.calibration import calibrate_for_compile

        calibrate_for_compile(g, model, opts, ctx)
    pipeline = opts.passes if opts.passes is not None else default_pipeline(opts.precision_mode)
    results = run_pipeline(g, pipeline, ctx, verify_each=opts.verify_each, dump_dir=opts.dump_ir,
                           timing=opts.pass_timing)
    return results, ctx.stats


def _without_timings(report: dict) -> dict:
    out = {k: v for k, v in report.items() if k != "import_seconds"}
    out["passes"] = [{"name": p["name"], "changed": p["changed"]} for p in report.get("passes", [])]
    return out


def compile_model(model: Any, soc_version: str = "Ascend310P3", **options: Any):
    """Compile an ONNX model (path, bytes or ModelProto) into an `Executable`.

    Options are `CompileOptions` fields.  Raises `AtcError` subclasses for
    anything a user can fix; other exceptions are wrapped as `InternalError`.
    """
    from codegen import build_executable
    from compiler.report import build_report
    from passes.target.soc import load_soc

    unknown = set(options) - set(CompileOptions.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown compile option(s): {', '.join(sorted(unknown))}")
    opts = CompileOptions(soc_version=soc_version, **options)
    opts.check()
    soc = load_soc(soc_version)
    try:
        t0 = time.perf_counter()
        g = lower_to_ir(model, opts)
        import_s = time.perf_counter() - t0
        ops_before = sum(1 for op in g.ops if op.kind != "const")
        passes, stats = run_passes(g, opts, soc, model)
        comp = Compilation(g, soc, stats, passes, import_s, ops_before)
        report = build_report(comp, opts, _model_name(model))
        # the .om carries the report without wall times, so the file is byte-identical run to run
        exe = build_executable(g, soc_version=soc_version, report=_without_timings(report),
                               options={"precision_mode": opts.precision_mode})
    except AtcError:
        raise
    except MemoryError as e:
        from ir.errors import MemoryBudgetError

        raise MemoryBudgetError(f"the host ran out of memory while compiling: {e}") from e
    except Exception as e:
        if type(e).__name__ in ("PassFailure",):
            raise InternalError(str(e)) from e
        raise InternalError(f"{type(e).__name__}: {e}") from e
    exe.compilation = comp
    exe.full_report = report
    return exe
