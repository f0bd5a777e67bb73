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
from ir.registry import CUBE_ONLY, CUBE_OR_VECTOR, VECTOR_ONLY, Attr, QuantRole, TypeInferenceError, define
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
def _conv_residual(op: Op) -> list[TensorType]:
    (y,) = _conv(op)
    if len(op.operands) > 3 and op.operands[3] is not None and operand_type(op, 3) != y:
        raise TypeInferenceError(f"fused.conv: a residual {operand_type(op, 3)} for a result {y}")
    return [y]


define("fused.conv", operands=(2, 4), infer=_conv_residual, attrs={**CONV_ATTRS, **ACT}, engines=CUBE_ONLY,
       gemm=conv_gemm, origin="Conv", quant=QuantRole("quant.conv"),
       doc="Conv (+bias) (+ a residual of the result's type, operand 3, added before the epilogue) with an "
           "activation epilogue (act = none or a name in `ir.registry.epilogue_names()`).")


def _se(op: Op) -> list[TensorType]:
    """fused.se(x [N, C, *sp], w1 [R, C, 1..], b1 [R], w2 [C, R, 1..], b2 [C]) -> x's type."""
    x = operand_type(op, 0)
    w1, b1, w2, b2 = (operand_type(op, i) for i in range(1, 5))
    if x.rank < 3 or not isinstance(x.shape[1], int):
        raise TypeInferenceError(f"fused.se: x {x} needs a static channel axis")
    c, r = x.shape[1], w1.shape[0] if w1.rank else None
    if (w1.rank < 2 or w1.shape[1] != c or w2.rank < 2 or w2.shape[:2] != (c, r) or b1.shape != (r,)
            or b2.shape != (c,) or any(d != 1 for d in (*w1.shape[2:], *w2.shape[2:]))):
        raise TypeInferenceError(f"fused.se: weights {w1}, {b1}, {w2}, {b2} are not a squeeze to {r} and an "
                                 f"excitation back to {c} channels")
    if op.attrs.get("gate", "sigmoid") not in ("sigmoid", "hardsigmoid"):
        raise TypeInferenceError(f"fused.se: gate must be sigmoid or hardsigmoid, got {op.attrs.get('gate')!r}")
    return [x]


define("fused.se", operands=5, infer=_se, engines=VECTOR_ONLY,
       attrs={"act": Attr("str", "relu"), "gate": Attr("str", "sigmoid"), "gate_alpha": Attr("float", 0.2),
              "gate_beta": Attr("float", 0.5)},
       doc="A squeeze-excitation block in one op: x * gate(conv2(act(conv1(GlobalAveragePool(x))))) with 1x1 "
           "convs (w1 [R, C, 1, 1], w2 [C, R, 1, 1] and their biases), act any Cube epilogue, gate sigmoid or "
           "hardsigmoid(gate_alpha, gate_beta). (x, w1, b1, w2, b2) -> x's type.")
