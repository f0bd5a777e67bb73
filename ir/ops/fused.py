"""Fused ops (``fused.*``): what the fuse pass produces and the Cube runs as one
instruction.

    %y = fused.matmul_add_relu(%x, %w, %b) : (tensor<8x64xf32>, tensor<64x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>

``act`` names the epilogue activation (``"none"`` or ``"relu"``); the bias
(operand 2) is broadcast over the rows like ONNX's Add.
"""

from __future__ import annotations

from ir.core import Op
from ir.gemm import conv_gemm, matmul_gemm
from ir.ops._infer import broadcast, operand_type
from ir.ops.core import CONV_ATTRS, _conv, matmul_shape
from ir.registry import CUBE_ONLY, CUBE_OR_VECTOR, Attr, QuantRole, define
from ir.types import TensorType


def _matmul_bias(op: Op) -> list[TensorType]:
    a, b = operand_type(op, 0), operand_type(op, 1)
    shape = matmul_shape(a.shape, b.shape, op)
    if len(op.operands) > 2 and op.operands[2] is not None:
        shape = broadcast([shape, operand_type(op, 2).shape])
    return [TensorType(a.dtype, shape)]


ACT = {"act": Attr("str", "none")}
MATMUL = {"engines": CUBE_OR_VECTOR, "gemm": matmul_gemm, "origin": "MatMul"}
define("fused.matmul_add_relu", operands=3, infer=_matmul_bias, **MATMUL, quant=QuantRole("quant.matmul", act="relu"),
       doc="MatMul + Add(bias) + Relu in one Cube instruction.")
define("fused.matmul_add", operands=3, infer=_matmul_bias, **MATMUL, quant=QuantRole("quant.matmul"),
       doc="MatMul + Add(bias).")
define("fused.matmul_relu", operands=2, infer=_matmul_bias, **MATMUL, quant=QuantRole("quant.matmul", act="relu"),
       doc="MatMul + Relu.")
define("fused.conv", operands=(2, 3), infer=_conv, attrs={**CONV_ATTRS, **ACT}, engines=CUBE_ONLY, gemm=conv_gemm,
       origin="Conv", quant=QuantRole("quant.conv"),
       doc="Conv (+bias) with an activation epilogue (act = none or an op's declared `epilogue` name).")
