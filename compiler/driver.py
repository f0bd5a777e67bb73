"""`compile_model`: ONNX model → IR → pipeline → executable, the one path the
CLI, the ONNX backend and the Python API share.

    exe = compile_model("resnet50.onnx", soc_version="Ascend310P3")
    exe.save("out/resnet50.om")
    Session(exe).run(None, {"data": x})
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

import onnx

from compiler.dims import apply_dim_ranges, apply_gears, gear_ranges, parse_dim_range, parse_input_shape_range
from compiler.frontend.layout import INPUT_FORMATS
from ir.core import Graph
from ir.errors import AtcError, InternalError, UsageError
from passes.calibrator import DEFAULT_BATCH
from passes.options import PassOptions

__all__ = ["INPUT_FORMATS", "PRECISION_MODES", "Compilation", "CompileOptions", "compile_model",
           "compile_with", "lower_to_ir"]

log = logging.getLogger("atcpy")

PRECISION_MODES = ("force_fp32", "must_keep_origin_dtype", "force_fp16", "allow_fp32_to_fp16", "allow_quantize")


@dataclass
class CompileOptions:
    """Every option of a compile, typed: the CLI fills it, `compile_model` takes its
    fields as keyword arguments (an unknown one is a `UsageError`), and the fields a
    pass reads reach the passes as `PassOptions` (`pass_options`) -- each of those
    has a field of the same name here."""

    soc_version: str = "Ascend310P3"
    input_shapes: Mapping[str, Sequence[int]] | None = None  # in the layout fed (NHWC for input_format=NHWC)
    input_format: str = "NCHW"  # NCHW | NHWC (4-D inputs are fed NHWC, transposed once) | ND
    dim_range: str | None = None  # "sequence_length:1~64;past_sequence_length:0~63": bounds of named dims
    input_shape_range: str | None = None  # ATC's "input_ids:[1,1~64]": bounds of an input's named dims
    dynamic_batch_size: str | None = None  # ATC's gears: "1,2,4,8" for the -1 batch of input_shapes
    dynamic_image_size: str | None = None  # "224,224;320,320" for the -1 height, width
    dynamic_dims: str | None = None  # "1,224;2,320": one value per -1 of input_shapes, in order
    out_nodes: Sequence[str] | None = None
    precision_mode: str = "force_fp32"
    passes: str | None = None  # overrides the default pipeline
    verify_each: bool = False
    dump_ir: str | None = None
    pass_timing: bool = False
    mem_limit: int | None = None
    calibration_data: str | None = None
    calibration_method: str = "mse"
    calibration_percentile: float = 99.9
    calibration_batch_size: int = DEFAULT_BATCH  # samples a calibration run takes at once (symbolic batch only)
    progress: bool = True  # a progress line on stderr while calibrating
    keep_dtype: str | None = None
    # --accuracy_target: the lowest output cosine (vs float, held-back calibration samples) INT8 may give;
    # layers are kept in float, the noisiest first, until it holds (compiler.accuracy.reach_accuracy_target)
    accuracy_target: float | None = None
    op_select_implmode: str = "high_performance"
    op_engine: str | None = None  # "Softmax=aicpu,MatMul=vector"
    # weight-only quantization (``--quant_type``): W8A16 | W4A16; W8A8 means precision_mode=allow_quantize
    quant_type: str | None = None
    weight_group_size: int = 128  # --weight_group_size: 32 | 64 | 128 (any even size works)
    weight_rounding: str = "rtn"  # --weight_rounding: rtn | gptq
    weight_symmetric: bool = True  # --weight_symmetric=false: a zero point per group
    kv_cache_dtype: str | None = None  # --kv_cache_dtype: fp16 | int8 (--compress_kv_cache=true: int8)
    weights_meta_only: bool = False  # plan without reading weight bytes (precheck of a never-filled model)
    # the older spelling of the fields above as a dict ({"progress": False}); each key must be a field
    extra: InitVar[Mapping[str, Any] | None] = None

    def __post_init__(self, extra: Mapping[str, Any] | None) -> None:
        if not extra:
            return
        unknown = sorted(set(extra) - set(self.field_names()))
        if unknown:
            raise UsageError(f"unknown compile option(s) in extra: {', '.join(unknown)}")
        for k, v in extra.items():
            setattr(self, k, v)

    def gear_flags(self) -> dict[str, str | None]:
        return {"--dynamic_batch_size": self.dynamic_batch_size, "--dynamic_image_size": self.dynamic_image_size,
                "--dynamic_dims": self.dynamic_dims}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def pass_options(self, **given: Any) -> PassOptions:
        """The options the passes read, from the fields of the same names (and `given`,
        e.g. the calibrator the driver built)."""
        mine = set(self.field_names())
        return PassOptions(**{n: getattr(self, n) for n in PassOptions.names() if n in mine}, **given)

    def _check_accuracy_target(self) -> None:
        t = self.accuracy_target
        if t is None:
            return
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise UsageError(f"--accuracy_target={t!r} must be a cosine above 0, e.g. 0.99")
        if self.precision_mode != "allow_quantize":
            raise UsageError("--accuracy_target rolls INT8 layers back to float: it needs "
                             "--precision_mode=allow_quantize (or --quant_type=W8A8)")
        if not self.calibration_data:
            raise UsageError("--accuracy_target measures on held-back calibration samples: give --calibration_data")

    def check(self) -> None:
        if self.quant_type == "W8A8":  # the calibrated INT8 path under the name the LLM tools use
            self.quant_type, self.precision_mode = None, "allow_quantize"
        if self.quant_type is not None and self.quant_type not in ("W8A16", "W4A16"):
            raise UsageError(f"unknown --quant_type={self.quant_type}; choose W8A8, W8A16 or W4A16")
        if self.kv_cache_dtype == "fp32":
            self.kv_cache_dtype = None
        if self.quant_type and self.weight_rounding == "gptq" and not self.calibration_data:
            raise UsageError("--weight_rounding=gptq measures the layers' inputs: give --calibration_data")
        if self.precision_mode not in PRECISION_MODES:
            raise UsageError(
                f"unknown --precision_mode={self.precision_mode}; choose one of {', '.join(PRECISION_MODES)}"
            )
        if self.calibration_method not in ("mse", "max", "percentile", "entropy"):
            raise UsageError(f"unknown --calibration_method={self.calibration_method}; choose mse, max, percentile or entropy")
        if not 0 < self.calibration_percentile <= 100:
            raise UsageError(f"--calibration_percentile={self.calibration_percentile} must be in (0, 100]")
        self._check_accuracy_target()
        parse_dim_range(self.dim_range)
        parse_input_shape_range(self.input_shape_range)
        apply_gears(dict(self.input_shapes) if self.input_shapes else None, self.gear_flags())
        if self.input_format not in INPUT_FORMATS:
            raise UsageError(f"unknown --input_format={self.input_format}; choose one of {', '.join(INPUT_FORMATS)}")
        if isinstance(self.calibration_batch_size, bool) or not isinstance(self.calibration_batch_size, int) \
                or self.calibration_batch_size < 1:
            raise UsageError(f"calibration_batch_size must be a positive int, got {self.calibration_batch_size!r}")
        if self.op_engine:
            from passes.base import PassError
            from passes.place import parse_overrides

            try:
                parse_overrides(self.op_engine)
            except PassError as e:
                raise UsageError(f"--op_engine={self.op_engine}: {str(e).removeprefix('place: ')}") from None
        self.pass_options()  # the types of what the passes read


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
    from compiler.frontend.layout import feed_nhwc, nchw_input_shapes

    shapes, gears = apply_gears(dict(opts.input_shapes) if opts.input_shapes else None, opts.gear_flags())
    if opts.input_format == "NHWC":
        shapes = nchw_input_shapes(shapes)
    g = import_onnx(model, input_shapes=shapes)
    apply_dim_ranges(g, {**parse_dim_range(opts.dim_range), **gear_ranges(gears)},
                     parse_input_shape_range(opts.input_shape_range))
    if gears:
        g.attrs["dim_gears"] = gears
    if opts.input_format == "NHWC":
        feed_nhwc(g)
    if opts.out_nodes:
        _select_outputs(g, opts.out_nodes)
    return g


def run_passes(g: Graph, opts: CompileOptions, soc: Any, model: Any = None) -> tuple[list[dict], dict]:
    from compiler.pipeline import default_pipeline, run_pipeline
    from passes.base import PassContext

    calibrator = None
    if opts.precision_mode == "allow_quantize" or (opts.quant_type and opts.weight_rounding == "gptq"):
        from compiler.calibration import compile_calibrator

        calibrator = compile_calibrator(g, opts)  # --calibration_data's errors come before any pass runs
    ctx = PassContext(soc=soc, options=opts.pass_options(calibrator=calibrator))
    if calibrator is not None:
        ctx.count("quantization", "samples", calibrator.samples)
    pipeline = opts.passes if opts.passes is not None else default_pipeline(opts.precision_mode, opts.quant_type)
    results = run_pipeline(g, pipeline, ctx, verify_each=opts.verify_each, dump_dir=opts.dump_ir,
                           timing=opts.pass_timing)
    return results, ctx.stats


def _without_timings(report: dict) -> dict:
    out = {k: v for k, v in report.items() if k != "import_seconds"}
    out["passes"] = [{"name": p["name"], "changed": p["changed"]} for p in report.get("passes", [])]
    if "accuracy_target" in report:
        out["accuracy_target"] = {k: v for k, v in report["accuracy_target"].items() if k != "seconds"}
    return out


GC_THRESHOLDS = (50_000, 20, 100)  # allocations before a young collection; young, middle collections per older


@contextlib.contextmanager
def gc_paced():
    """Python's cyclic collector, paced for a compile: the IR is millions of small linked
    objects, all live until the end, and the default thresholds (700, 10, 10) walk them
    over and over -- 35% of a 50k-node compile (16.8 s -> 12.6 s raised; 11.3 s with no
    collection at all).  The old thresholds come back afterwards.  They are process-wide:
    a compile in one thread paces the collector for the others while it runs."""
    old = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def compile_model(model: Any, soc_version: str = "Ascend310P3", **options: Any):
    """Compile an ONNX model (path, bytes or ModelProto) into an `Executable`.

    Options are `CompileOptions` fields.  Raises `AtcError` subclasses for
    anything a user can fix; other exceptions are wrapped as `InternalError`.
    """
    unknown = set(options) - set(CompileOptions.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown compile option(s): {', '.join(sorted(unknown))}")
    return compile_with(model, CompileOptions(soc_version=soc_version, **options))




@gc_paced()
def compile_with(model: Any, opts: CompileOptions, accuracy_target: dict | None = None):
    """`compile_model` with the options as one `CompileOptions` (the CLI's way).
    ``opts.accuracy_target`` needs its loop run first: `compiler.accuracy.compile_to_target`
    does, and passes what it reached as `accuracy_target` (for the report); the
    driver cannot run it itself (compiler.accuracy imports the driver)."""
    from codegen import build_executable
    from compiler.report import build_report
    from passes.target.soc import load_soc

    opts.check()
    if opts.accuracy_target is not None and accuracy_target is None:
        raise UsageError("accuracy_target: compile with compiler.accuracy.compile_to_target (the CLI does), "
                         "which runs the loop and then this compile")
    if opts.weights_meta_only:
        raise UsageError("weights_meta_only plans memory without reading the weights; it cannot write an "
                         "executable (use --mode=3, the precheck)")
    soc_version = opts.soc_version
    soc = load_soc(soc_version)
    try:
        t0 = time.perf_counter()
        g = lower_to_ir(model, opts)
        import_s = time.perf_counter() - t0
        ops_before = sum(1 for op in g.ops if op.kind != "const")
        target = accuracy_target
        passes, stats = run_passes(g, opts, soc, model)
        comp = Compilation(g, soc, stats, passes, import_s, ops_before)
        report = build_report(comp, opts, _model_name(model))
        if target is not None:
            report["accuracy_target"] = target
        if opts.input_format == "NHWC":  # only then: a default compile's report (and .om) stays as it was
            report["input_format"] = {"format": "NHWC", "inputs": [v.name for v in g.inputs if v.type.rank == 4]}
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
