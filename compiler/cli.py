"""`atcpy`: the command line, with ATC's flag names and meanings where they apply.

    atcpy --model=x.onnx --framework=5 --soc_version=Ascend310P3 --output=out/x
    atcpy --mode=3 --model=x.onnx --soc_version=Ascend310P3        # precheck (writes only --report)
    atcpy --mode=1 --om=out/x.om --json=out/x.json                  # .om as readable JSON
    atcpy --mode=1 --om=out/x.om --onnx=out/x.compiled.onnx         # the compiled program for Netron
    atcpy --mode=6 --om=out/x.om                                    # summary of an .om

It ends with one success line, or one ``atcpy: error: ...`` line and the
error's exit code (2 usage, 3 unsupported model, 4 invalid .om, 1 internal).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ir.errors import AtcError, UsageError
from runtime.cli import _HelpFormatter, check_not_onnx, package_version, regular_file
from runtime.om import write_atomic

if TYPE_CHECKING:
    from compiler.driver import CompileOptions

__all__ = ["build_parser", "main"]

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR, "null": logging.CRITICAL + 10}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 with usage; keep one clear line instead
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="atcpy", description="Compile an ONNX model into an atcpy .om executable.",
                formatter_class=_HelpFormatter)
    a = p.add_argument
    a("--version", action="version", version=f"%(prog)s {package_version()}")
    a("--mode", type=int, default=0, choices=[0, 1, 3, 6],
      help="0 compile, 1 .om to JSON and/or ONNX, 3 precheck only, 6 print an .om summary")
    a("--model", help="the ONNX model file")
    a("--framework", type=int, default=5, help="5 = ONNX (the only framework supported)")
    a("--output", help="output path without extension; writes OUTPUT.om")
    a("--soc_version", default=None, help="target SoC, e.g. Ascend310P3, Ascend310, Ascend910B")
    a("--input_shape", default=None, help='"name:1,3,224,224;name2:1,10" fixes input shapes')
    a("--input_format", default="NCHW", choices=["NCHW", "NHWC", "ND"],
      help="layout of 4-D inputs as fed: NCHW or ND leave them as the model has them; NHWC feeds "
           "them NHWC (one Transpose at the input; --input_shape is then NHWC too)")
    a("--dim_range", default=None,
      help='"sequence_length:1~64;past_sequence_length:0~63" bounds named dims: one .om runs every shape '
           'in range, its memory planned at the bounds')
    a("--input_shape_range", default=None, help='ATC\'s per-input form of --dim_range: "input_ids:[1,1~64]"')
    a("--dynamic_batch_size", default=None,
      help='ATC\'s gears: "1,2,4,8", the batch sizes the -1 batch of --input_shape takes (one .om)')
    a("--dynamic_image_size", default=None, help='"224,224;320,320": the (height, width) pairs of the -1 dims')
    a("--dynamic_dims", default=None, help='"1,224;2,320": per gear, one value for each -1 of --input_shape')
    a("--out_nodes", default=None, help='"tensor;node:index" tensors to make the outputs')
    a("--precision_mode", default="force_fp32",
      help="force_fp32 | must_keep_origin_dtype | force_fp16 | allow_fp32_to_fp16 | allow_quantize")
    a("--calibration_data", default=None, help=".npz (one array per input, samples first) or a directory of .npy/.bin")
    a("--calibration_method", default="mse", help="mse | max | percentile | entropy")
    a("--calibration_percentile", type=float, default=99.9, help="the percentile method's clip point")
    a("--quant_type", default=None, choices=["W8A8", "W8A16", "W4A16"],
      help="W8A16 / W4A16: weight-only INT8 / INT4 (group-wise scales along K, activations in float); "
           "W8A8: the calibrated INT8 path (= --precision_mode=allow_quantize)")
    a("--weight_group_size", type=int, default=128, help="weights per scale along K for W8A16/W4A16 (32, 64, 128)")
    a("--weight_rounding", default="rtn", choices=["rtn", "gptq"], help="round to nearest, or GPTQ's error feedback")
    a("--weight_symmetric", default="true", choices=["true", "false"],
      help="true: zero point 0 per group; false: a zero point per group")
    a("--kv_cache_dtype", default=None, choices=["fp32", "fp16", "int8"],
      help="the KV cache's storage: the model's dtype (default), fp16, or int8 with a scale per token and head")
    a("--compress_kv_cache", default="false", choices=["true", "false"], help="true: --kv_cache_dtype=int8")
    a("--keep_dtype", default=None, help="file listing op names or OpType::X kept in original precision")
    a("--accuracy_report", default=None, help="write the INT8 accuracy report (JSON) here")
    a("--accuracy_target", type=float, default=None,
      help="INT8 only: the lowest output cosine against float allowed on the held-back calibration samples, "
           "e.g. 0.99; the layers adding the most noise are kept in float until it holds (exit 3 if all-float "
           "misses it)")
    a("--op_select_implmode", default="high_performance", choices=["high_performance", "high_precision"],
      help="kernel variants: fast approximations, or exact ones")
    a("--op_engine", default=None, help='per-op-type engine override, e.g. "Softmax=aicpu,MatMul=vector"')
    a("--mem_limit", default=None, help="memory budget (bytes, or with K/M/G suffix) instead of the SoC's DDR")
    a("--passes", default=None, help='pipeline override, e.g. "canonicalize,fuse,tile{size=256}"')
    a("--log", default="warning", choices=list(LOG_LEVELS), help="log level")
    a("--dump_ir", default=None, help="write the IR after every pass into this directory")
    a("--pass_timing", action="store_true", help="print a per-pass timing table")
    a("--verify_each", action="store_true", help="verify the IR after every pass")
    a("--report", default=None, help="write the JSON compile report here")
    a("--om", default=None, help="the .om file (modes 1 and 6)")
    a("--json", default=None, help="output JSON path (mode 1)")
    a("--onnx", default=None,
      help="mode 1: write the compiled program as an ONNX graph to view in Netron: a node per step (fused and "
           "quant steps in the 'atcpy' domain) with its engine, tile plan, arena slot and estimated time")
    a("--arena_svg", default=None,
      help="mode 1: draw the memory plan as SVG (steps across, arena offsets down, a box per tensor)")
    a("--onnx_weights", default="om", choices=["om", "embed", "shape"],
      help="weights in --onnx: om = read from the .om beside it (external data, nothing copied), embed = copied "
           "into the .onnx, shape = shape and dtype only (graph inputs); om falls back to shape when the .om is "
           "not in the .onnx's directory")
    return p


def parse_input_shape(spec: str | None) -> dict[str, list[int]] | None:
    if not spec:
        return None
    shapes: dict[str, list[int]] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, sep, dims = part.rpartition(":")
        if not sep or not name:
            raise UsageError(f'--input_shape: expected "name:d0,d1,...", got {part!r}')
        try:
            shapes[name] = [int(d) for d in dims.split(",") if d.strip()]
        except ValueError:
            raise UsageError(f"--input_shape: dimensions of {name!r} must be integers, got {dims!r}") from None
        # 0 is a size (an empty KV cache at the prompt step); -1 a dim that changes (with a gear flag)
        if any(d < -1 for d in shapes[name]):
            raise UsageError(f"--input_shape: {name!r} has a dimension below -1 ({dims}); -1 marks a dim "
                             "that changes (with --dynamic_batch_size, --dynamic_image_size or --dynamic_dims)")
    return shapes


def parse_bytes(spec: str | None) -> int | None:
    if spec is None:
        return None
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    s = spec.strip().upper().removesuffix("B").removesuffix("I")
    try:
        n = int(float(s[:-1]) * units[s[-1]]) if s and s[-1] in units else int(s)
    except (ValueError, OverflowError):
        raise UsageError(f"--mem_limit: cannot read {spec!r} as a size (e.g. 512M, 8G, 1048576)") from None
    if n <= 0:
        raise UsageError(f"--mem_limit={spec} must be positive (e.g. 512M, 8G, 1048576)")
    return n


def output_file(flag: str, path: str | os.PathLike) -> Path:
    """`path` if a file can be written there: it is a regular file or nothing yet, and the nearest
    existing parent is a directory; else a usage error naming the path."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise UsageError(f"{flag}: cannot write {str(path)!r}: {e.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise UsageError(f"{flag}: {str(path)!r} is a directory; give a file path")
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{flag}: {str(path)!r} is not a regular file (a device, FIFO or socket); give a file path")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag}: cannot write {str(path)!r}: {str(parent)!r} is not a directory")
    return path


def _om_path(output: str) -> Path:
    if output.endswith(("/", os.sep)) or Path(output).is_dir():
        raise UsageError(f"--output: {output!r} is a directory; give a file path without extension, "
                         f"e.g. {os.path.join(output, 'model')}")
    out = Path(output)
    return output_file("--output", out if out.suffix == ".om" else out.with_name(out.name + ".om"))


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        raise UsageError(f"--mode={args.mode} needs {' and '.join(missing)}")


def _compile_options(args: argparse.Namespace) -> CompileOptions:
    from compiler.driver import CompileOptions

    if args.framework != 5:
        raise UsageError(f"--framework={args.framework} is not supported; atcpy reads ONNX models (--framework=5)")
    if args.model:
        regular_file("--model", args.model, UsageError)
    if args.calibration_data and not (args.precision_mode == "allow_quantize" or args.quant_type == "W8A8"
                                      or args.weight_rounding == "gptq"):
        print("atcpy: warning: --calibration_data is ignored: it is read only with --precision_mode=allow_quantize "
              "(or --quant_type=W8A8) or --weight_rounding=gptq", file=sys.stderr)
    return CompileOptions(
        soc_version=args.soc_version,
        input_shapes=parse_input_shape(args.input_shape),
        input_format=args.input_format,
        dim_range=args.dim_range,
        input_shape_range=args.input_shape_range,
        dynamic_batch_size=args.dynamic_batch_size,
        dynamic_image_size=args.dynamic_image_size,
        dynamic_dims=args.dynamic_dims,
        out_nodes=[s for s in args.out_nodes.split(";") if s] if args.out_nodes else None,
        precision_mode=args.precision_mode,
        passes=args.passes,
        verify_each=args.verify_each,
        dump_ir=args.dump_ir,
        pass_timing=False,  # the CLI prints the table itself (the driver would log it a second time)
        mem_limit=parse_bytes(args.mem_limit),
        calibration_data=args.calibration_data,
        calibration_method=args.calibration_method,
        calibration_percentile=args.calibration_percentile,
        keep_dtype=args.keep_dtype,
        accuracy_target=args.accuracy_target,
        op_select_implmode=args.op_select_implmode,
        op_engine=args.op_engine,
        quant_type=args.quant_type,
        weight_group_size=args.weight_group_size,
        weight_rounding=args.weight_rounding,
        weight_symmetric=args.weight_symmetric == "true",
        kv_cache_dtype="int8" if args.compress_kv_cache == "true" else args.kv_cache_dtype,
    )


def _mode_compile(args: argparse.Namespace, precheck: bool) -> int:
    from compiler.driver import compile_with
    from compiler.report import format_summary

    _require(args, "model", "soc_version")
    if not precheck:
        _require(args, "output")
    report_path = output_file("--report", args.report) if args.report else None
    om_path = None if precheck else _om_path(args.output)
    if args.accuracy_report:
        output_file("--accuracy_report", args.accuracy_report)
    opts = _compile_options(args)
    if precheck:
        return _precheck(args, opts, report_path)
    with _report_on_failure(args, report_path):
        if opts.accuracy_target is not None:
            from compiler.accuracy import compile_to_target

            exe = compile_to_target(args.model, opts)
        else:
            exe = compile_with(args.model, opts)
    report = exe.full_report  # with wall times; the .om keeps a copy without them
    if args.pass_timing:
        from compiler.pipeline import format_timing

        print(format_timing(report["passes"]))
    if args.accuracy_report and args.precision_mode == "allow_quantize":
        from compiler.accuracy import write_accuracy_report

        write_accuracy_report(args.model, exe, opts, Path(args.accuracy_report))
    exe.save(om_path)
    if report_path is not None:
        _write_json(report_path, report)
    logging.getLogger("atcpy").info("\n%s", format_summary(report))
    mem = report["memory"]
    print(
        f"atcpy run success: wrote {om_path} ({report['ops']['total']} ops: "
        + ", ".join(f"{k} {v}" for k, v in report["ops"]["by_engine"].items())
        + f"; weights {mem['weights_bytes'] / 2**20:.2f} MiB, arena {mem['arena_bytes'] / 2**20:.2f} MiB)"
        + _target_line(report.get("accuracy_target"))
    )
    return 0


def _target_line(target: dict | None) -> str:
    """The success line's account of --accuracy_target."""
    if not target:
        return ""
    return (f"; accuracy target {target['target']!r}: cosine {target['cosine']:.6f} with {target['rolled_back']} "
            f"layer(s) in float ({target['iterations']} iteration(s))")


@contextlib.contextmanager
def _report_on_failure(args: argparse.Namespace, report_path: Path | None) -> Iterator[None]:
    """A model problem (exit 3) still writes --report, as ATC's precheck writes its result file."""
    try:
        yield
    except AtcError as e:
        if e.exit_code == 3 and report_path is not None:  # --accuracy_target's miss carries what it reached
            _write_json(report_path, {**getattr(e, "report", {}), "model": args.model,
                                      "soc_version": args.soc_version, "status": "failed",
                                      "error": f"{e.kind}: {e}", "problems": [str(e)]})
        raise


def _write_json(path: Path, obj: dict) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def _precheck(args: argparse.Namespace, opts: CompileOptions, report_path: Path | None) -> int:
    from compiler.precheck import precheck as run_precheck
    from compiler.report import format_summary

    kwargs = {k: getattr(opts, k) for k in opts.field_names() if k != "soc_version"}
    with _report_on_failure(args, report_path):
        problems, report = run_precheck(args.model, args.soc_version, **kwargs)
    if report:
        print(format_summary(report))
    if report_path is not None:
        _write_json(report_path, {**(report or {}), "model": args.model, "soc_version": args.soc_version,
                                  "status": "failed" if problems else "ok", "problems": list(map(str, problems))})
    if problems:
        for p in problems:
            print(f"  - {p}")
        raise _PrecheckFailed(len(problems), report_path)
    print(f"atcpy precheck success: {args.model} can be compiled for {args.soc_version}.")
    return 0


class _PrecheckFailed(AtcError):
    exit_code = 3
    kind = "precheck failed"

    def __init__(self, n: int, report: Path | None = None) -> None:
        wrote = f"only the report {report} was written" if report else "nothing was written"
        super().__init__(f"{n} problem(s) found; {wrote}")


def _load_om(path: str):
    from runtime.om import load_executable

    check_not_onnx(regular_file("--om", path, UsageError))
    return load_executable(path)


def _mode_json(args: argparse.Namespace) -> int:
    _require(args, "om")
    if not (args.json or args.onnx or args.arena_svg):
        raise UsageError("--mode=1 needs --json, --onnx or --arena_svg (any of them)")
    json_path = output_file("--json", args.json) if args.json else None
    onnx_path = output_file("--onnx", args.onnx) if args.onnx else None
    svg_path = output_file("--arena_svg", args.arena_svg) if args.arena_svg else None
    exe = _load_om(args.om)
    wrote = []
    if svg_path is not None:
        from compiler.arena_svg import arena_svg

        write_atomic(svg_path, arena_svg(exe).encode())
        wrote.append(args.arena_svg)
    if json_path is not None:
        write_atomic(json_path, (json.dumps(exe.to_json(), indent=2, sort_keys=True) + "\n").encode())
        wrote.append(args.json)
    if onnx_path is not None:
        wrote.append(_write_onnx(exe, args.om, onnx_path, args.onnx_weights))
    print(f"atcpy run success: wrote {', '.join(wrote)}")
    return 0


def _write_onnx(exe, om: str, path: Path, weights: str) -> str:
    """The compiled program as ONNX (`compiler.om_to_onnx`); returns what the success line says."""
    from compiler.om_to_onnx import om_to_onnx

    model, used = om_to_onnx(exe, weights=weights, om_path=om, onnx_path=path)
    if used != weights:
        print(f"atcpy: warning: --onnx_weights={weights}: {om} is not in the directory of {path} (ONNX reads "
              f"external data only there); wrote the weights' shapes only", file=sys.stderr)
    try:
        data = model.SerializeToString()
    except ValueError as e:  # protobuf's 2 GB limit, with --onnx_weights=embed
        raise UsageError(f"--onnx: cannot write {str(path)!r}: {e}; use --onnx_weights=om or shape") from None
    write_atomic(path, data)
    return f"{path} ({len(model.graph.node)} nodes, weights: {used})"


def _mode_summary(args: argparse.Namespace) -> int:
    from compiler.report import format_summary

    _require(args, "om")
    exe = _load_om(args.om)
    try:  # the report is the file's, unchecked by the loader (the runtime never reads it)
        text = format_summary(exe.report)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        from runtime.errors import InvalidOmError

        raise InvalidOmError(f"{args.om}: report: unreadable ({type(e).__name__}: {e})") from None
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        level = LOG_LEVELS[args.log]
        logging.basicConfig(level=level, format="[%(levelname)s] %(message)s", stream=sys.stderr)
        logging.getLogger("atcpy").setLevel(level)
        if args.soc_version is not None and args.mode in (0, 3):
            from passes.target.soc import load_soc

            load_soc(args.soc_version)  # an unknown SoC fails before anything else
        if args.mode in (0, 3):
            return _mode_compile(args, precheck=args.mode == 3)
        if args.mode == 1:
            return _mode_json(args)
        return _mode_summary(args)
    except AtcError as e:
        print(f"atcpy: error: {e.kind}: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # runtime.errors.* come through here when reading an .om
        code = getattr(e, "exit_code", None)
        if isinstance(code, int):
            print(f"atcpy: error: {getattr(e, 'kind', 'error')}: {e}", file=sys.stderr)
            return code
        print(f"atcpy: error: internal error: {type(e).__name__}: {e} (please report this)", file=sys.stderr)
        if os.environ.get("ATCPY_TRACEBACK"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
