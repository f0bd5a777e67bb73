"""Elementwise ops (ONNX names, operand order and attributes) and the random ops.

Each declaration carries what the backend needs: a Vector kernel
(``engines=VECTOR_ONLY``), whether force_fp16 may run it in fp16 (`FP16_SAFE`),
whether a Cube op may run it as its epilogue (``epilogue="relu"``: the fuse pass
folds ``Conv -> Relu`` into ``fused.conv {act = "relu"}``), and whether it draws
random numbers (never folded):

    %y = Relu(%x) : (tensor<1x64x56x56xf32>) -> tensor<1x64x56x56xf32>
    %z = HardSwish(%x) : (tensor<1x16x112x112xf32>) -> tensor<1x16x112x112xf32>
"""

from __future__ import annotations

from ir.core import Op
from ir.ops._infer import broadcast, broadcast_all, operand_type, same_as, trusted, with_dtype_of
from ir.registry import (
    COMMUTATIVE,
    ELEMENTWISE,
    FP16_SAFE,
    HOMOGENEOUS,
    NONDETERMINISTIC,
    UNARY,
    VECTOR_ONLY,
    Attr,
    define,
)
from ir.types import DType, TensorType

__all__: list[str] = []

I, S = Attr("int"), Attr("str")


def _i(d: int) -> Attr:
    return Attr("int", d)


def _f(d: float) -> Attr:
    return Attr("float", d)


UNARY_OP = {ELEMENTWISE, UNARY}

# --- activations: Vector kernels, some also Cube epilogues ------------------------------
define("Relu", operands=1, infer=same_as(0), traits=UNARY_OP | {FP16_SAFE, HOMOGENEOUS}, engines=VECTOR_ONLY,
       epilogue="relu", doc="%y = Relu(%x); fuses into a Cube op as act = \"relu\"")
define("Sigmoid", operands=1, infer=same_as(0), traits=UNARY_OP | {FP16_SAFE}, engines=VECTOR_ONLY,
       epilogue="sigmoid")
define("Tanh", operands=1, infer=same_as(0), traits=UNARY_OP | {FP16_SAFE}, engines=VECTOR_ONLY)
define("HardSwish", operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY, epilogue="hardswish",
       doc="%y = HardSwish(%x): x * clip(x / 6 + 1 / 2, 0, 1); fuses into a Cube op as act = \"hardswish\"")
define("Swish", operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY, attrs={"alpha": _f(1.0)},
       doc="%y = Swish(%x) {alpha = 1.0}: x * sigmoid(alpha * x) (SiLU at alpha = 1; ONNX opset 24)")
define("LeakyRelu", operands=1, infer=same_as(0), traits=UNARY_OP | {FP16_SAFE}, engines=VECTOR_ONLY,
       attrs={"alpha": _f(0.01)})
define("Clip", operands=(1, 3), infer=same_as(0), traits={ELEMENTWISE, FP16_SAFE}, engines=VECTOR_ONLY)

# the other float unary ops: a Vector kernel each, kept in fp32 under force_fp16
for _name in ("Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Erf", "Floor", "Ceil", "Round", "Sin", "Cos",
              "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Softsign", "Softplus",
              "Sign", "Identity", "Mish"):
    define(_name, operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY)
define("Not", operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY)
define("IsNaN", operands=1, infer=with_dtype_of(0, DType.bool), traits=UNARY_OP, engines=VECTOR_ONLY)
define("IsInf", operands=1, infer=with_dtype_of(0, DType.bool), traits=UNARY_OP, engines=VECTOR_ONLY,
       attrs={"detect_negative": _i(1), "detect_positive": _i(1)})
define("Elu", operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY, attrs={"alpha": _f(1.0)})
define("Celu", operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY, attrs={"alpha": _f(1.0)})
define("Selu", operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY,
       attrs={"alpha": _f(1.6732632423543772), "gamma": _f(1.0507009873554805)})
define("ThresholdedRelu", operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY,
       attrs={"alpha": _f(1.0)})
define("HardSigmoid", operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY,
       attrs={"alpha": _f(0.2), "beta": _f(0.5)})
define("Gelu", operands=1, infer=same_as(0), traits=UNARY_OP, engines=VECTOR_ONLY, attrs={"approximate": Attr("str", "none")})


def _training_dropout(op: Op) -> bool:
    """Dropout draws a mask only in training mode (operand 2, absent or false by default)."""
    if len(op.operands) < 3 or op.operands[2] is None:
        return False
    mode = op.operand_const(2)
    return mode is None or (mode.size > 0 and bool(mode.reshape(-1)[0]))


define("Dropout", operands=(1, 3), traits={ELEMENTWISE}, engines=VECTOR_ONLY, nondeterministic=_training_dropout,
       infer=lambda op: [operand_type(op, 0)] + ([operand_type(op, 0).with_dtype(DType.bool)] if len(op.results) > 1 else []),
       attrs={"seed": I})
define("Cast", operands=1, traits=UNARY_OP, engines=VECTOR_ONLY,
       attrs={"to": Attr("int", required=True), "saturate": _i(1), "round_mode": S},
       infer=lambda op: [operand_type(op, 0).with_dtype(DType.from_onnx(op.attrs["to"]))])
define("CastLike", operands=2, traits={ELEMENTWISE}, engines=VECTOR_ONLY, attrs={"saturate": _i(1), "round_mode": S},
       infer=lambda op: [operand_type(op, 0).with_dtype(operand_type(op, 1).dtype)])

# --- binary and variadic: name -> traits beyond ELEMENTWISE --------------------------------
BINARY = {"Add": {COMMUTATIVE, FP16_SAFE}, "Sub": {FP16_SAFE}, "Mul": {COMMUTATIVE, FP16_SAFE}, "Div": {FP16_SAFE},
          "Pow": set(), "Mod": set(), "BitShift": set(), "BitwiseAnd": {COMMUTATIVE}, "BitwiseOr": {COMMUTATIVE},
          "BitwiseXor": {COMMUTATIVE}, "PRelu": set()}
for _name, _traits in BINARY.items():
    _attrs = {"fmod": _i(0)} if _name == "Mod" else {"direction": S} if _name == "BitShift" else {}
    define(_name, operands=2, infer=broadcast_all(), traits={ELEMENTWISE} | _traits, engines=VECTOR_ONLY, attrs=_attrs)
for _name in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"):
    define(_name, operands=2, infer=broadcast_all(DType.bool), traits={ELEMENTWISE}, engines=VECTOR_ONLY)
for _name in ("Sum", "Max", "Min", "Mean"):
    define(_name, operands=(1, None), infer=broadcast_all(), traits={ELEMENTWISE, COMMUTATIVE}, engines=VECTOR_ONLY)
define("Where", operands=3, traits={ELEMENTWISE}, engines=VECTOR_ONLY,
       infer=lambda op: [TensorType(operand_type(op, 1).dtype, broadcast([v.type.shape for v in op.operands]))])


# --- random: AICPU only, never folded ----------------------------------------------------
def _as_given(op: Op) -> list[TensorType]:
    return trusted(op, "a random op's result type comes from ONNX shape inference")


F = Attr("float")
_NORMAL = {"dtype": I, "mean": _f(0.0), "scale": _f(1.0), "seed": F}
_UNIFORM = {"dtype": I, "high": _f(1.0), "low": _f(0.0), "seed": F}
_SHAPE = {"shape": Attr("ints", required=True)}
_RANDOM = {"infer": _as_given, "traits": {NONDETERMINISTIC}}
define("RandomNormal", operands=0, attrs={**_NORMAL, **_SHAPE}, **_RANDOM)
define("RandomUniform", operands=0, attrs={**_UNIFORM, **_SHAPE}, **_RANDOM)
define("RandomNormalLike", operands=1, attrs=_NORMAL, **_RANDOM)
define("RandomUniformLike", operands=1, attrs=_UNIFORM, **_RANDOM)
define("Multinomial", operands=1, attrs={"dtype": _i(6), "sample_size": _i(1), "seed": F}, **_RANDOM)
define("Bernoulli", operands=1, attrs={"dtype": I, "seed": F}, **_RANDOM)
