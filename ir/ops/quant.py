"""Quantization ops (``quant.*``): symmetric INT8, zero point 0, range [-127, 127].

The scheme (see `runtime.kernels.quant` for the arithmetic): ``scale = amax / 127``,
``q = clip(round_half_even(x / scale), -127, 127)``, ``x' = q * scale``.  Activations
are quantized per tensor (a float ``scale`` attribute, from calibration); weights per
output channel (their scales are a constant operand of the integer Cube op).

Converting between float and int8:

    %q = quant.quantize(%x) {scale = 0.0123} : (tensor<8x64xf32>) -> tensor<8x64xi8>
    %y = quant.dequantize(%q) {scale = 0.0123} : (tensor<8x64xi8>) -> tensor<8x64xf32>
    %r = quant.requantize(%q) {scale = 0.0123, to_scale = 0.05} : (tensor<8x64xi8>) -> tensor<8x64xi8>

Integer Cube ops (what the ``quantize`` pass emits).  Operands: the int8
activation, the int8 weight, an optional int32 bias (already in the accumulator's
scale ``x_scale * w_scale[n]``) and the f32 per-output-channel weight scales.  The
product is accumulated exactly in int32; the epilogue dequantizes
(``acc * x_scale * w_scale[n]``), applies ``act``, and either returns f32
(``out = "f32"``) or requantizes to int8 with ``y_scale`` (``out = "i8"``, used
when the consumer is itself quantized):

    %y = quant.matmul(%xq, %wq, %bq, %ws) {act = "relu", out = "f32", x_scale = 0.031}
        : (tensor<8x64xi8>, tensor<64x32xi8>, tensor<32xi32>, tensor<32xf32>) -> tensor<8x32xf32>
    %z = quant.conv(%xq, %wq, %bq, %ws) {act = "relu", out = "i8", x_scale = 0.02, y_scale = 0.05,
                                          pads = [1, 1, 1, 1], strides = [1, 1], ...}
        : (tensor<1x3x8x8xi8>, tensor<16x3x3x3xi8>, tensor<16xi32>, tensor<16xf32>) -> tensor<1x16x8x8xi8>

``quant.matmul``'s weight is ``[K, N]`` (channel axis 1, a Gemm's ``transB`` and
``alpha`` are folded in by the pass); ``quant.conv``'s is ONNX's ``[M, C/group, kH, kW]``
(channel axis 0).  Operand 2 may be ``none``.
"""

from __future__ import annotations

from ir.core import Op
from ir.gemm import Gemm, conv_gemm, matmul_gemm
from ir.ops._infer import operand_type
from ir.ops.core import CONV_ATTRS, _conv, matmul_shape
from ir.registry import (
    CUBE_ONLY,
    ELEMENTWISE,
    INDEXED_READ,
    UNARY,
    VECTOR_ONLY,
    Attr,
    TypeInferenceError,
    define,
)
from ir.symbolic import dim_prod
from ir.types import DType, TensorType

__all__ = ["INT_CUBE_KINDS", "QMAX"]

QMAX = 127  # symmetric range [-QMAX, QMAX]; -128 is never produced
INT_CUBE_KINDS = ("quant.matmul", "quant.conv")

SCALE = {"scale": Attr("any", required=True), "axis": Attr("int", 0)}
define("quant.quantize", engines=VECTOR_ONLY, operands=1, traits={ELEMENTWISE, UNARY}, attrs=SCALE,
       infer=lambda op: [operand_type(op, 0).with_dtype(DType.i8)],
       doc="f32 -> i8: clip(round(x / scale), -127, 127)")
define("quant.dequantize", engines=VECTOR_ONLY, operands=1, traits={ELEMENTWISE, UNARY}, attrs={**SCALE, "to": Attr("str", "f32")},
       infer=lambda op: [operand_type(op, 0).with_dtype(DType(op.attrs.get("to", "f32")))],
       doc="i8/i32 -> float: q * scale")
define("quant.requantize", engines=VECTOR_ONLY, operands=1, traits={ELEMENTWISE, UNARY},
       attrs={"scale": Attr("float", required=True), "to_scale": Attr("float", required=True)},
       infer=lambda op: [operand_type(op, 0).with_dtype(DType.i8)],
       doc="i8 -> i8 at another scale: clip(round(q * scale / to_scale), -127, 127)")

EPILOGUE = {
    "act": Attr("str", "none"),
    "out": Attr("str", "f32"),
    "x_scale": Attr("float", required=True),
    "y_scale": Attr("float"),
}


def _out_dtype(op: Op) -> DType:
    out = op.attrs.get("out", "f32")
    if out not in ("f32", "i8", "i32"):
        raise TypeInferenceError(f"{op.kind}: out must be f32, i8 or i32, not {out!r}")
    if out == "i8" and op.attrs.get("y_scale") is None:
        raise TypeInferenceError(f"{op.kind}: out = \"i8\" needs y_scale")
    return DType(out)


def _check_int8(op: Op) -> None:
    for i in (0, 1):
        if operand_type(op, i).dtype is not DType.i8:
            raise TypeInferenceError(f"{op.kind}: operand {i} must be i8, not {operand_type(op, i).dtype.value}")


def _qmatmul(op: Op) -> list[TensorType]:
    _check_int8(op)
    shape = matmul_shape(operand_type(op, 0).shape, operand_type(op, 1).shape, op)
    return [TensorType(_out_dtype(op), shape)]


def _qconv(op: Op) -> list[TensorType]:
    _check_int8(op)
    return [_conv(op)[0].with_dtype(_out_dtype(op))]


define("quant.matmul", operands=4, infer=_qmatmul, attrs=EPILOGUE, engines=CUBE_ONLY, gemm=matmul_gemm,
       doc="int8 x int8 -> int32 MatMul (+ int32 bias) with a dequantize/requantize epilogue.")
define("quant.conv", operands=4, infer=_qconv, attrs={**CONV_ATTRS, **EPILOGUE}, engines=CUBE_ONLY, gemm=conv_gemm,
       doc="int8 Conv as implicit GEMM, int32 accumulation, dequantize/requantize epilogue.")


def _nbits(op: Op) -> list[TensorType]:
    x, qw, s = (operand_type(op, i) for i in range(3))
    bits, g, k, n = (int(op.attrs[a]) for a in ("bits", "group_size", "k", "n"))
    if bits not in (4, 8) or g < 2 or g % 2:
        raise TypeInferenceError(f"quant.matmul_nbits: bits must be 4 or 8 and group_size even, got {bits}, {g}")
    g_count = -(-k // g)
    want = (g_count, g // 2 if bits == 4 else g, n)
    if qw.shape != want or qw.dtype not in (DType.i8, DType.u8) or s.shape != (g_count, n):
        raise TypeInferenceError(f"quant.matmul_nbits: weight {qw} / scales {s} do not match bits={bits}, "
                                 f"group_size={g}, k={k}, n={n} (weight {list(want)}, scales [{g_count}, {n}])")
    if not x.dtype.is_float or x.rank < 1 or x.shape[-1] != k:
        raise TypeInferenceError(f"quant.matmul_nbits: the input {x} must be float with last dim {k}")
    return [x.with_shape(x.shape[:-1] + (n,))]


def nbits_gemm(op: Op) -> Gemm | None:
    """The float product it stands for: ``[.., M, K] x [K, N]``, the weight read in its stored bytes."""
    x = op.operands[0].type if op.operands and op.operands[0] is not None else None
    if x is None or x.rank < 1:
        return None
    m = x.shape[-2] if x.rank >= 2 else 1
    return Gemm("matmul", dim_prod(list(x.shape[:-2])) if x.rank > 2 else 1, m, int(op.attrs["k"]),
                int(op.attrs["n"]), x.dtype)


define("quant.matmul_nbits", operands=(3, 4), infer=_nbits, engines=CUBE_ONLY, gemm=nbits_gemm,
       attrs={"bits": Attr("int", required=True), "group_size": Attr("int", required=True),
              "k": Attr("int", required=True), "n": Attr("int", required=True)},
       origin="MatMul", label="matmul (weights int4/int8)",
       doc="x @ W with W stored group-wise in 8 or 4 bits (see `runtime.kernels.nbits`): "
           "(x, qweight [G, g or g/2, N], scales [G, N], zeros [G, N]?) -> [..., N].")


def _gather_nbits(op: Op) -> list[TensorType]:
    idx, qw, s = (operand_type(op, i) for i in range(3))
    bits, g, d = (int(op.attrs[a]) for a in ("bits", "group_size", "d"))
    g_count = -(-d // g)
    if bits not in (4, 8) or not idx.dtype.is_int or qw.rank != 3 or qw.shape[:2] != (g_count, g // 2 if bits == 4 else g):
        raise TypeInferenceError(f"quant.gather_nbits: weight {qw} does not match bits={bits}, group_size={g}, d={d}")
    if s.shape != (g_count, qw.shape[2]):
        raise TypeInferenceError(f"quant.gather_nbits: scales {s} do not match the weight {qw}")
    return [TensorType(DType(op.attrs.get("dtype", "f32")), tuple(idx.shape) + (d,))]


define("quant.gather_nbits", operands=(3, 4), infer=_gather_nbits, engines=VECTOR_ONLY, traits={INDEXED_READ},
       attrs={"bits": Attr("int", required=True), "group_size": Attr("int", required=True),
              "d": Attr("int", required=True), "dtype": Attr("str", "f32")},
       origin="Gather", label="gather (table int4/int8)",
       doc="Rows of an embedding table [V, D] stored group-wise along D, transposed ([G, g or g/2, V], "
           "`runtime.kernels.nbits`): (indices, qweight, scales [G, V], zeros?) -> [*indices, D].")
