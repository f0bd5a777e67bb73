"""What atcpy makes of each op of an ONNX model, without building the IR.

    coverage("model.onnx")
      -> Coverage(declared={"Conv": 53, "Relu": 49, ...}, opaque={"TopK": 1},
                  unsupported=[Problem("Loop", "loop_0", 13, "", "has a subgraph attribute 'body' ...")])
    precheck("model.onnx")   # ATC --mode=3: the problems as lines, [] when all can run
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from compiler.frontend.onnx_model import ModelLike, infer_value_types, load_model, shape_model
from compiler.frontend.support import Problem, classify_node, find_problems, kind_of
from ir.errors import AtcError
from ir.types import Dim

__all__ = ["Coverage", "coverage", "precheck"]


@dataclass
class Coverage:
    declared: Counter[str] = field(default_factory=Counter)
    opaque: Counter[str] = field(default_factory=Counter)
    constants: int = 0
    unsupported: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"declared ({sum(self.declared.values())}): " + ", ".join(f"{k}x{n}" for k, n in sorted(self.declared.items())),
                 f"opaque/AICPU ({sum(self.opaque.values())}): " + ", ".join(f"{k}x{n}" for k, n in sorted(self.opaque.items())),
                 f"unsupported ({len(self.unsupported)}):"]
        lines += [f"  {p}" for p in self.unsupported]
        return "\n".join(lines)


def coverage(model: ModelLike, input_shapes: dict[str, list[Dim]] | None = None) -> Coverage:
    lm = load_model(model)
    types, _ = infer_value_types(shape_model(lm, input_shapes))
    cov = Coverage()
    for node in lm.proto.graph.node:
        status, _reasons = classify_node(node, lm, types)
        if status == "declared":
            cov.declared[kind_of(node)] += 1
        elif status == "opaque":
            cov.opaque[kind_of(node)] += 1
        elif status == "constant":
            cov.constants += 1
    cov.unsupported = find_problems(lm, types)
    return cov


def precheck(model: ModelLike, input_shapes: dict[str, list[Dim]] | None = None) -> list[str]:
    """Every reason the model cannot be compiled, one line each ([] when it can).
    A model that does not even load gives one line saying why."""
    try:
        return [str(p) for p in coverage(model, input_shapes).unsupported]
    except AtcError as e:
        return [str(e)]
