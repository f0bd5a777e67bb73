"""The one op registry: every op kind is declared here once.

An `OpDef` holds the operand count, the attribute schema (types and defaults),
the traits and the type-inference function.  The frontend, verifier, printer
and parser, passes and runtime all read it.  Declarations live in
``ir/ops/*.py`` (one module per namespace/family) and register themselves
with `define`:

    define("Relu", operands=1, traits={ELEMENTWISE, UNARY}, infer=same_as(0))

Kinds that are not declared are *opaque* ONNX ops (kept with the types ONNX
shape inference gave them); placement sends them to the AICPU engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir.core import Op
from ir.types import TensorType

__all__ = [
    "COMMUTATIVE",
    "CUBE",
    "ELEMENTWISE",
    "SHAPE_FROM_DATA",
    "UNARY",
    "VIEW",
    "Attr",
    "OpDef",
    "TypeInferenceError",
    "all_ops",
    "define",
    "infer_types",
    "lookup",
]

# traits
ELEMENTWISE = "elementwise"  # output[i] depends on input[i] only (broadcast allowed)
UNARY = "unary"
COMMUTATIVE = "commutative"
VIEW = "view"  # output is a reinterpretation of operand 0's bytes (zero-copy)
CUBE = "cube"  # a matrix op the Cube engine can run
SHAPE_FROM_DATA = "shape_from_data"  # output shape depends on operand values

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


InferFn = Callable[[Op], list[TensorType]]


@dataclass
class OpDef:
    name: str
    min_operands: int
    max_operands: int | None  # None: variadic
    infer: InferFn
    attrs: dict[str, Attr] = field(default_factory=dict)
    traits: frozenset[str] = frozenset()
    doc: str = ""

    def with_defaults(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: a.default for k, a in self.attrs.items() if a.default is not None and k not in attrs}
        out.update(attrs)
        return out

    def has(self, trait: str) -> bool:
        return trait in self.traits


_REGISTRY: dict[str, OpDef] = {}


def define(
    name: str,
    *,
    operands: int | tuple[int, int | None] = 1,
    infer: InferFn,
    attrs: Mapping[str, Attr] | None = None,
    traits: set[str] | frozenset[str] = frozenset(),
    doc: str = "",
) -> OpDef:
    if name in _REGISTRY:
        raise ValueError(f"op {name!r} declared twice")
    lo, hi = (operands, operands) if isinstance(operands, int) else operands
    d = OpDef(name, lo, hi, infer, dict(attrs or {}), frozenset(traits), doc)
    _REGISTRY[name] = d
    return d


def lookup(kind: str) -> OpDef | None:
    _ensure_loaded()
    return _REGISTRY.get(kind)


def all_ops() -> dict[str, OpDef]:
    _ensure_loaded()
    return dict(_REGISTRY)


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


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import ir.ops  # noqa: F401  (registers every declaration)
