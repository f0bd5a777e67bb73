"""cast-precision: run Cube ops (and, for ``force_fp16``, the Vector ops between them)
in fp16, as ATC's ``--precision_mode`` fp16 modes do.

Modes (``ctx.options.precision_mode``, or the pass option `mode`):

- ``allow_fp32_to_fp16``: Cube ops take fp16 operands (weights stored as fp16
  constants, activations cast on the way in) and their results are cast back to
  fp32 at once; Vector ops stay fp32.
- ``force_fp16``: as above, and the ops declared `FP16_SAFE` (elementwise,
  pooling, data movement) run in fp16 too, so activations stay fp16 between Cube ops.
- anything else (``force_fp32``, ``must_keep_origin_dtype``, ``allow_quantize``): no change.

The Cube accumulates in fp32 (the runtime's Cube kernels widen fp16 operands
before the product); only storage and operands are fp16.

    %y = MatMul(%x, %w) : (tensor<8x64xf32>, tensor<64x32xf32>) -> tensor<8x32xf32>
      ==>
    %x_f16 = Cast(%x) {to = 10} : (tensor<8x64xf32>) -> tensor<8x64xf16>
    %y_f16 = MatMul(%x_f16, %w_f16) {precision = "fp16"} : (tensor<8x64xf16>, tensor<64x32xf16>) -> tensor<8x32xf16>
    %y = Cast(%y_f16) {to = 1} : (tensor<8x32xf16>) -> tensor<8x32xf32>

Casts that meet (``Cast<f16>(Cast<f32>(v_f16))``) are folded away — an exact
round trip.  Ops named in ``keep_dtype`` (names or ``OpType::X``) are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ir.core import Graph, Op, Value
from ir.registry import CUBE, FP16_SAFE, lookup
from ir.types import DType
from passes._rewrite import apply_rules, is_output, rename
from passes.base import Pass, PassContext, register
from passes.quantize import kept, parse_keep_dtype

__all__ = ["FP16_MODES", "CastPrecision"]

FP16_MODES = ("force_fp16", "allow_fp32_to_fp16")
F16, F32 = DType.f16.onnx, DType.f32.onnx


def _target(op: Op, mode: str) -> bool:
    d = lookup(op.kind)
    if d is None or op.kind == "const" or op.namespace == "quant":
        return False
    if not any(r.type.dtype is DType.f32 for r in op.results):
        return False
    # force_fp16 also runs the Vector ops declared FP16_SAFE in fp16 (Softmax, normalizations and
    # reductions are not: exp/sums overflow fp16's range)
    return d.runs_on(CUBE) or (mode == "force_fp16" and d.has(FP16_SAFE))


def _convert(graph: Graph, op: Op, casts: dict[int, Value], consts: dict[int, Value]) -> bool:
    operands: list[Value | None] = []
    for v in op.operands:
        if v is None or v.type.dtype is not DType.f32:
            operands.append(v)
        elif v.producer is not None and v.producer.kind == "const":
            if id(v) not in consts:
                consts[id(v)] = graph.const(v.producer.attrs["value"].astype(np.float16), f"{v.name}_f16")
            operands.append(consts[id(v)])
        else:
            if id(v) not in casts:
                casts[id(v)] = graph.add_op("Cast", [v], {"to": F16}, names=[f"{v.name}_f16"], before=op).result
            operands.append(casts[id(v)])
    attrs = dict(op.attrs)
    if lookup(op.kind).runs_on(CUBE):  # type: ignore[union-attr]
        attrs["precision"] = "fp16"
    try:
        new = graph.add_op(op.kind, operands, attrs, before=op, names=[f"{r.name}_f16" for r in op.results])
    except Exception:  # noqa: BLE001 - an op whose types cannot be re-inferred stays fp32
        return False
    if any(r.type.dtype is not (DType.f16 if o.type.dtype is DType.f32 else o.type.dtype)
           for r, o in zip(new.results, op.results)):
        for r in new.results:
            if r.uses:
                return False
        graph.erase(new)
        return False
    renames: list[tuple[Value, str]] = []
    for old, r in zip(op.results, new.results):
        if old.type.dtype is DType.f32:
            back = graph.add_op("Cast", [r], {"to": F32}, after=new).result
        else:
            back = r
        graph.replace_value(old, back)
        casts[id(back)] = r  # a later fp16 consumer of `back` reads `r` directly
        renames.append((back, old.name))
    graph.erase(op)  # frees the old names for the values that replace them
    for v, name in renames:
        rename(graph, v, name)
    return True


def fold_cast_pair(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """Cast<f16>(Cast<f32>(v: f16)) ==> v."""
    inner = op.operands[0].producer  # type: ignore[union-attr]
    if op.attrs.get("to") != F16 or inner is None or inner.kind != "Cast" or inner.attrs.get("to") != F32:
        return False
    src = inner.operands[0]
    if src is None or src.type.dtype is not DType.f16 or is_output(graph, op.result):
        return False
    graph.replace_op(op, [src])
    return True


@register
@dataclass
class CastPrecision(Pass):
    name: ClassVar[str] = "cast-precision"
    mode: str = ""  # overrides ctx.options.precision_mode

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        mode = self.mode or ctx.options.precision_mode or ""
        if mode not in FP16_MODES:
            return False
        keep = parse_keep_dtype(ctx.options.keep_dtype)
        casts: dict[int, Value] = {}
        consts: dict[int, Value] = {}
        changed = False
        for op in list(graph.ops):
            if op.graph is graph and _target(op, mode) and not kept(op, keep) and _convert(graph, op, casts, consts):
                ctx.count("precision", "fp16_ops")
                changed = True
        if changed:
            apply_rules(graph, {"Cast": [fold_cast_pair]}, ctx)
        return changed
