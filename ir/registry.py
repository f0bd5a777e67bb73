"""The one op registry: every op kind is declared once, with everything a stage
needs to know about it.

An `OpDef` holds the operand count, the attribute schema (types and defaults),
the type-inference function, and the backend facts: the engines with a kernel
for it, its GEMM view (`ir.gemm`), its quantization role, what it may fuse into,
and traits (elementwise, view, moves-data-only, fp16-safe, non-deterministic).
The frontend, verifier, printer/parser, the passes, the cost model and codegen
read it; nobody else keeps a list of op names.  Declarations live in
``ir/ops/*.py`` (one module per namespace/family), which ``import ir`` loads:

    define("Relu", operands=1, infer=same_as(0), traits={ELEMENTWISE, UNARY, FP16_SAFE},
           engines=VECTOR_ONLY, epilogue="relu")

Kinds that are not declared are *opaque* ONNX ops (kept with the types ONNX
shape inference gave them); placement sends them to the AICPU engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ir.gemm import Gemm
from ir.types import TensorType

if TYPE_CHECKING:
    from ir.core import Op

__all__ = [
    "AICPU",
    "COMMUTATIVE",
    "CUBE",
    "CUBE_ONLY",
    "CUBE_OR_VECTOR",
    "ELEMENTWISE",
    "ENGINES",
    "FP16_SAFE",
    "HOMOGENEOUS",
    "HOST",
    "MOVES_DATA",
    "NONDETERMINISTIC",
    "SHAPE_FROM_DATA",
    "SHAPE_PROGRAM",
    "UNARY",
    "VECTOR",
    "VECTOR_ONLY",
    "VIEW",
    "Attr",
    "OpDef",
    "QuantRole",
    "TypeInferenceError",
    "all_ops",
    "define",
    "foldable",
    "gemm_dims",
    "infer_types",
    "lookup",
    "nondeterministic",
]

# engines (ATC's fallback order)
CUBE, VECTOR, AICPU = "cube", "vector", "aicpu"
ENGINES = (CUBE, VECTOR, AICPU)
HOST = "host"  # the shape program: a few integer ops on the input dims, before the AI Core runs
CUBE_ONLY, VECTOR_ONLY, CUBE_OR_VECTOR = (CUBE,), (VECTOR,), (CUBE, VECTOR)

# traits
ELEMENTWISE = "elementwise"  # output[i] depends on input[i] only (broadcast allowed)
UNARY = "unary"
COMMUTATIVE = "commutative"
VIEW = "view"  # output is a reinterpretation of operand 0's bytes (zero-copy)
MOVES_DATA = "moves_data"  # output elements are operand 0's, moved (a quantize commutes with it exactly)
HOMOGENEOUS = "positive_homogeneous"  # f(s * x) = s * f(x) per channel for s > 0 (equalization passes through)
FP16_SAFE = "fp16_safe"  # exact or well-conditioned in fp16: force_fp16 runs it in fp16
SHAPE_FROM_DATA = "shape_from_data"  # output shape depends on operand values
NONDETERMINISTIC = "nondeterministic"  # the result is not a function of the operands: never folded
SHAPE_PROGRAM = "shape_program"  # computed on the host from the input dims (`ir.ops.shape`)
INDEXED_READ = "indexed_read"  # reads only the table elements its integer operands pick (a Gather of rows)
APPENDS = "appends"  # writes its last operand after what a buffer it owns holds (a KV cache): moves that only

# atcpy's own op namespaces: no ONNX meaning, so never folded through onnx.reference
NON_ONNX_NAMESPACES = ("fused", "quant", "sym", "kv")

ATTR_KINDS = ("int", "float", "str", "ints", "floats", "strs", "tensor", "any")


class TypeInferenceError(ValueError):
    pass


@dataclass(frozen=True)
class Attr:
    kind: str
    default: Any = None
    required: bool = False

    def check(self, value: Any) -> bool:
        k = self.kind
        if k == "any":
            return True
        if k == "int":
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool) or isinstance(value, bool)
        if k == "float":
            return isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
        if k == "str":
            return isinstance(value, str)
        if k == "tensor":
            return isinstance(value, np.ndarray)
        if not isinstance(value, (list, tuple)):
            return False
        elem = {"ints": (int, np.integer), "floats": (int, float, np.floating), "strs": (str,)}[k]
        return all(isinstance(v, elem) for v in value)


InferFn = Callable[["Op"], list[TensorType]]
GemmFn = Callable[["Op"], "Gemm | None"]


@dataclass(frozen=True)
class QuantRole:
    """How `quantize` turns the op into an integer Cube op: `to` (``quant.matmul``
    or ``quant.conv``), the weight operand, and the activation the op implies
    (``fused.matmul_add_relu``: relu; an ``act`` attribute, where the op has one, wins)."""

    to: str
    weight: int = 1
    act: str = "none"


@dataclass
class OpDef:
    name: str
    min_operands: int
    max_operands: int | None  # None: variadic
    infer: InferFn
    attrs: dict[str, Attr] = field(default_factory=dict)
    traits: frozenset[str] = frozenset()
    doc: str = ""
    engines: frozenset[str] = frozenset()  # AI Core engines with a kernel; every declared op also runs on AICPU
    gemm: GemmFn | None = None  # the Cube op as GEMMs (`ir.gemm`)
    label: str = ""  # how placement reasons name it ("matmul 64x64x64 f32 -> cube")
    quant: QuantRole | None = None
    origin: str = ""  # the ONNX op a fused op came from (``keep_dtype``'s ``OpType::X``)
    epilogue: str = ""  # this op can run as a Cube op's ``act`` epilogue under this name
    nondeterministic: Callable[[Op], bool] | None = None  # when only some instances draw random numbers

    def with_defaults(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: a.default for k, a in self.attrs.items() if a.default is not None and k not in attrs}
        out.update(attrs)
        return out

    def has(self, trait: str) -> bool:
        return trait in self.traits

    def runs_on(self, engine: str) -> bool:
        """A kernel for `engine` exists (the SoC may still lack it or the dtype)."""
        return engine == AICPU or engine in self.engines


_REGISTRY: dict[str, OpDef] = {}


def define(
    name: str,
    *,
    operands: int | tuple[int, int | None] = 1,
    infer: InferFn,
    attrs: Mapping[str, Attr] | None = None,
    traits: set[str] | frozenset[str] = frozenset(),
    doc: str = "",
    engines: tuple[str, ...] | frozenset[str] = (),
    gemm: GemmFn | None = None,
    label: str = "",
    quant: QuantRole | None = None,
    origin: str = "",
    epilogue: str = "",
    nondeterministic: Callable[[Op], bool] | None = None,
) -> OpDef:
    if name in _REGISTRY:
        raise ValueError(f"op {name!r} declared twice")
    if not set(engines) <= set(CUBE_OR_VECTOR):
        raise ValueError(f"op {name!r}: engines must be among {CUBE_OR_VECTOR}, got {engines}")
    if (CUBE in engines) != (gemm is not None):
        raise ValueError(f"op {name!r}: a Cube kernel needs a GEMM view and a GEMM view a Cube kernel")
    lo, hi = (operands, operands) if isinstance(operands, int) else operands
    d = OpDef(name, lo, hi, infer, dict(attrs or {}), frozenset(traits), doc, frozenset(engines), gemm,
              label or name, quant, origin or name, epilogue, nondeterministic)
    _REGISTRY[name] = d
    return d


def lookup(kind: str) -> OpDef | None:
    return _REGISTRY.get(kind)


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


# Epilogues the fuse pass forms from a pattern rather than one declared op (their operands
# or shape of uses decide): ``Clip(x, 0, 6)`` and ``Mul(x, Sigmoid(x))``.
PATTERN_EPILOGUES = {"relu6": "Clip(x, 0, 6)", "silu": "Mul(x, Sigmoid(x))"}


def epilogue_names() -> frozenset[str]:
    """Every ``act`` a Cube op may carry: ``none``, the declared ``epilogue`` names and
    `PATTERN_EPILOGUES` -- what the fuse pass may write and the .om loader accepts."""
    return frozenset({"none", *PATTERN_EPILOGUES} | {d.epilogue for d in _REGISTRY.values() if d.epilogue})


def gemm_dims(op: Op) -> Gemm | None:
    """The GEMMs a Cube op performs (`ir.gemm`), or None if it is not a Cube op."""
    d = _REGISTRY.get(op.kind)
    return None if d is None or d.gemm is None else d.gemm(op)


def nondeterministic(op: Op) -> bool:
    """The op's result is not a function of its operands (random ops, training Dropout)."""
    d = _REGISTRY.get(op.kind)
    if d is None:
        return False
    return d.has(NONDETERMINISTIC) or (d.nondeterministic is not None and d.nondeterministic(op))


def foldable(op: Op) -> bool:
    """The one rule for constant folding (importer, canonicalize, codegen's flag for the
    Session): an ONNX op (opaque ones included; not ``const``, ``fused.*`` or ``quant.*``,
    which have no ONNX meaning) whose result is a function of its operands."""
    if op.kind == "const" or op.kind.rsplit(".", 1)[0] in NON_ONNX_NAMESPACES:
        return False
    return not nondeterministic(op)


def infer_types(op: Op) -> list[TensorType]:
    d = lookup(op.kind)
    if d is None:
        if op.results:
            return [r.type for r in op.results]
        raise TypeInferenceError(f"{op.kind} is not a declared op; its result types must be given")
    try:
        return d.infer(op)
    except TypeInferenceError:
        raise
    except Exception as e:  # a bug or bad input in an inference function
        raise TypeInferenceError(f"{op.kind}: type inference failed: {e}") from e

