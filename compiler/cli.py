"""`atcpy`: the command line, with ATC's flag names and meanings where they apply.

    atcpy --model=x.onnx --framework=5 --soc_version=Ascend310P3 --output=out/x
    atcpy --mode=3 --model=x.onnx --soc_version=Ascend310P3        # precheck, writes nothing
    atcpy --mode=1 --om=out/x.om --json=out/x.json                  # .om as readable JSON
    atcpy --mode=6 --om=out/x.om                                    # summary of an .om

It ends with one success line, or one ``atcpy: error: ...`` line and the
error's exit code (2 usage, 3 unsupported model, 4 invalid .om, 1 internal).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ir.errors import AtcError, UsageError
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
    p = _Parser(prog="atcpy", description="Compile an ONNX model into an atcpy .om executable.")
    a = p.add_argument
    a("--mode", type=int, default=0, choices=[0, 1, 3, 6],
      help="0 compile (default), 1 .om to JSON, 3 precheck only, 6 print an .om summary")
    a("--model", help="the ONNX model file")
    a("--framework", type=int, default=5, help="5 = ONNX (the only framework supported)")
    a("--output", help="output path without extension; writes OUTPUT.om")
    a("--soc_version", default=None, help="target SoC, e.g. Ascend310P3, Ascend310, Ascend910B")
    a("--input_shape", default=None, help='"name:1,3,224,224;name2:1,10" fixes input shapes')
    a("--input_format", default="NCHW", choices=["NCHW", "NHWC", "ND"],
      help="layout of 4-D inputs as fed: NCHW (default) or ND leave them as the model has them; NHWC feeds "
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
    a("--calibration_method", default="percentile", help="max | percentile | entropy")
    a("--calibration_percentile", type=float, default=99.9)
    a("--quant_type", default=None, choices=["W8A8", "W8A16", "W4A16"],
      help="W8A16 / W4A16: weight-only INT8 / INT4 (group-wise scales along K, activations in float); "
           "W8A8: the calibrated INT8 path (= --precision_mode=allow_quantize)")
    a("--weight_group_size", type=int, default=128, help="weights per scale along K for W8A16/W4A16 (32, 64, 128)")
    a("--weight_rounding", default="rtn", choices=["rtn", "gptq"], help="round to nearest, or GPTQ's error feedback")
    a("--weight_symmetric", default="true", choices=["true", "false"],
      help="true: zero point 0 per group (default); false: a zero point per group")
    a("--kv_cache_dtype", default=None, choices=["fp32", "fp16", "int8"],
      help="the KV cache's storage: the model's dtype (default), fp16, or int8 with a scale per token and head")
    a("--compress_kv_cache", default="false", choices=["true", "false"], help="true: --kv_cache_dtype=int8")
    a("--keep_dtype", default=None, help="file listing op names or OpType::X kept in original precision")
    a("--accuracy_report", default=None, help="write the INT8 accuracy report (JSON) here")
    a("--op_select_implmode", default="high_performance", choices=["high_performance", "high_precision"])
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
        if s and s[-1] in units:
            return int(float(s[:-1]) * units[s[-1]])
        return int(s)
    except ValueError:
        raise UsageError(f"--mem_limit: cannot read {spec!r} as a size (e.g. 512M, 8G, 1048576)") from None


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n}" for n in names if not getattr(args, n)]
    if missing:
        raise UsageError(f"--mode={args.mode} needs {' and '.join(missing)}")


def _compile_options(args: argparse.Namespace) -> CompileOptions:
    from compiler.driver import CompileOptions

    if args.framework != 5:
        raise UsageError(f"--framework={args.framework} is not supported; atcpy reads ONNX models (--framework=5)")
    if args.model and not Path(args.model).is_file():
        raise UsageError(f"--model: no such file {args.model!r}")
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
        pass_timing=args.pass_timing,
        mem_limit=parse_bytes(args.mem_limit),
        calibration_data=args.calibration_data,
        calibration_method=args.calibration_method,
        calibration_percentile=args.calibration_percentile,
        keep_dtype=args.keep_dtype,
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
    opts = _compile_options(args)
    if precheck:
        from compiler.precheck import precheck as run_precheck

        kwargs = {k: getattr(opts, k) for k in opts.field_names() if k != "soc_version"}
        problems, report = run_precheck(args.model, args.soc_version, **kwargs)
        if report:
            print(format_summary(report))
        if problems:
            for p in problems:
                print(f"  - {p}")
            raise _PrecheckFailed(len(problems))
        print(f"atcpy precheck success: {args.model} can be compiled for {args.soc_version}.")
        return 0
    exe = compile_with(args.model, opts)
    report = exe.full_report  # with wall times; the .om keeps a copy without them
    if args.pass_timing:
        from compiler.pipeline import format_timing

        print(format_timing(report["passes"]))
    if args.accuracy_report and args.precision_mode == "allow_quantize":
        from compiler.accuracy import write_accuracy_report

        write_accuracy_report(args.model, exe, opts, Path(args.accuracy_report))
    out = Path(args.output)
    om_path = out if out.suffix == ".om" else out.with_name(out.name + ".om")
    exe.save(om_path)
    if args.report:
        write_atomic(Path(args.report), (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    logging.getLogger("atcpy").info("\n%s", format_summary(report))
    mem = report["memory"]
    print(
        f"atcpy run success: wrote {om_path} ({report['ops']['total']} ops: "
        + ", ".join(f"{k} {v}" for k, v in report["ops"]["by_engine"].items())
        + f"; weights {mem['weights_bytes'] / 2**20:.2f} MiB, arena {mem['arena_bytes'] / 2**20:.2f} MiB)"
    )
    return 0


class _PrecheckFailed(AtcError):
    exit_code = 3
    kind = "precheck failed"

    def __init__(self, n: int) -> None:
        super().__init__(f"{n} problem(s) found; nothing was written")


def _load_om(path: str):
    from runtime.om import load_executable

    if not Path(path).is_file():
        raise UsageError(f"--om: no such file {path!r}")
    return load_executable(path)


def _mode_json(args: argparse.Namespace) -> int:
    _require(args, "om", "json")
    exe = _load_om(args.om)
    write_atomic(Path(args.json), (json.dumps(exe.to_json(), indent=2, sort_keys=True) + "\n").encode())
    print(f"atcpy run success: wrote {args.json}")
    return 0


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
