"""Which ONNX nodes atcpy can run, and why not when it cannot.

A node is

- *declared* when its kind is in the op registry (first-class: inference, native kernels),
- *opaque* when it is a valid ONNX op an `onnx.reference` kernel can run on the AICPU,
- *unsupported* otherwise: subgraph attributes (If/Loop/Scan), sequence/map/optional
  values, ops with no ONNX schema or no reference kernel, and
  element types the IR has no dtype for.

    classify_node(node, lm, types) -> ("unsupported", ["has a subgraph attribute 'body' ..."])
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import onnx
import onnx.defs

from compiler.frontend.onnx_model import DEFAULT_DOMAINS, LoadedModel, TypeProblem, convert_type
from ir.registry import lookup

__all__ = ["Problem", "classify_node", "find_problems", "format_problems", "has_reference_kernel", "kind_of"]

TRAINING_DOMAIN = "ai.onnx.preview.training"
# ops whose values are sequences/optionals by definition (caught by type too, but
# shape inference may leave them untyped)
_SEQUENCE_OPS = frozenset({
    "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase", "SequenceAt", "SequenceLength",
    "SplitToSequence", "ConcatFromSequence", "SequenceMap", "Optional", "OptionalGetElement",
    "OptionalHasElement",
})


# non-default domains whose ops onnx.reference implements (the runtime's AICPU loaders);
# the training ops (Adagrad, Adam, Momentum) are plain tensor arithmetic there.
_REFERENCE_DOMAINS = {
    "ai.onnx.ml": "onnx.reference.ops.aionnxml",
    "ai.onnx.preview": "onnx.reference.ops.aionnx_preview",
    TRAINING_DOMAIN: "onnx.reference.ops.aionnx_preview_training",
}


@dataclass(frozen=True)
class Problem:
    op_type: str
    node_name: str
    opset: int
    domain: str
    reason: str

    def __str__(self) -> str:
        dom = "" if self.domain in DEFAULT_DOMAINS else f"{self.domain}."
        name = repr(self.node_name) if self.node_name else "(unnamed)"
        return f"{dom}{self.op_type} (node {name}, opset {self.opset}): {self.reason}"


def kind_of(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


@cache
def has_reference_kernel(domain: str, op_type: str, version: int) -> bool:
    """Can the AICPU fallback run this op through `onnx.reference`?  Ops defined by an
    ONNX function body count: the reference evaluator expands them."""
    dom = "" if domain in DEFAULT_DOMAINS else domain
    try:
        schema = onnx.defs.get_schema(op_type, version, dom)
    except onnx.defs.SchemaError:
        return False
    if schema.has_function or schema.has_context_dependent_function:
        return True
    try:
        if dom == "":
            from onnx.reference.ops import load_op

            load_op("", op_type, version)
        elif dom in _REFERENCE_DOMAINS:
            import importlib

            importlib.import_module(_REFERENCE_DOMAINS[dom]).load_op(dom, op_type, version)
        else:
            return False
    except Exception:  # noqa: BLE001  (load_op raises many kinds)
        return False
    return True


def _has_schema(node: onnx.NodeProto, version: int) -> bool:
    dom = "" if node.domain in DEFAULT_DOMAINS else node.domain
    try:
        onnx.defs.get_schema(node.op_type, version, dom)
    except onnx.defs.SchemaError:
        return False
    return True


def classify_node(node: onnx.NodeProto, lm: LoadedModel, types: dict[str, onnx.TypeProto]) -> tuple[str, list[str]]:
    """("declared" | "opaque" | "unsupported" | "constant", reasons)."""
    version = lm.domain_opset(node.domain)
    reasons: list[str] = []
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            reasons.append(f"has a subgraph attribute {a.name!r} (control flow is not supported by any engine)")
    if kind_of(node) == "BatchNormalization" and lm.domain_opset(node.domain) < 14 and (
        sum(1 for o in node.output if o) > 1
    ):
        # before opset 14 the extra outputs were saved statistics with other semantics
        reasons.append("BatchNormalization in training mode before opset 14 (saved statistics outputs)")
    if node.op_type in _SEQUENCE_OPS and node.domain in DEFAULT_DOMAINS:
        reasons.append("works on sequence/optional values")
    else:
        for name in list(node.input) + list(node.output):
            if not name:
                continue
            try:
                convert_type(types.get(name))
            except TypeProblem as e:
                if e.kind == "rank":
                    continue  # may still be recovered by node-level inference
                reasons.append(f"value {name!r} is a {e}")
                break
    if not reasons and not _has_schema(node, version):
        reasons.append(f"no ONNX schema for this op in domain {node.domain or 'ai.onnx'!r} at opset {version}")
    if reasons:
        return "unsupported", reasons
    if kind_of(node) == "Constant":
        return "constant", []
    if lookup(kind_of(node)) is not None:
        return "declared", []
    if not has_reference_kernel(node.domain, node.op_type, version):
        return "unsupported", ["not a first-class op and onnx.reference has no kernel for it (no AICPU kernel)"]
    return "opaque", []


def find_problems(lm: LoadedModel, types: dict[str, onnx.TypeProto]) -> list[Problem]:
    problems: list[Problem] = []
    g = lm.proto.graph
    init_names = {t.name for t in g.initializer}
    for vi in g.input:
        if vi.name in init_names:
            continue
        try:
            t = convert_type(types.get(vi.name, vi.type))
            if t is None:
                raise TypeProblem("rank", "tensor of unknown element type")
        except TypeProblem as e:
            hint = " (give its shape with input_shapes / --input_shape)" if e.kind == "rank" else ""
            problems.append(Problem("graph input", vi.name, lm.opset, "", f"{e}{hint}"))
    for node in g.node:
        status, reasons = classify_node(node, lm, types)
        if status == "unsupported":
            problems.append(Problem(node.op_type, node.name, lm.domain_opset(node.domain), node.domain, "; ".join(reasons)))
    return problems


def format_problems(problems: list[Problem]) -> str:
    n = len(problems)
    head = f"the model has {n} op{'s' if n != 1 else ''} no engine can run:"
    return "\n  ".join([head, *map(str, problems)])
