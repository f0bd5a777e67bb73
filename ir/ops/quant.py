"""Quantization ops (``quant.*``): symmetric INT8, zero point 0.

    %q = quant.quantize(%x) {scale = 0.0123} : (tensor<8x64xf32>) -> tensor<8x64xi8>
    %y = quant.dequantize(%q) {scale = 0.0123} : (tensor<8x64xi8>) -> tensor<8x64xf32>

``scale`` is a float (per tensor) or an array along ``axis`` (per channel).
"""

from __future__ import annotations

from ir.ops._infer import operand_type
from ir.registry import ELEMENTWISE, UNARY, Attr, define
from ir.types import DType

SCALE = {"scale": Attr("any", required=True), "axis": Attr("int", 0)}
define("quant.quantize", operands=1, traits={ELEMENTWISE, UNARY}, attrs=SCALE,
       infer=lambda op: [operand_type(op, 0).with_dtype(DType.i8)])
define("quant.dequantize", operands=1, traits={ELEMENTWISE, UNARY}, attrs={**SCALE, "to": Attr("str", "f32")},
       infer=lambda op: [operand_type(op, 0).with_dtype(DType(op.attrs.get("to", "f32")))])
