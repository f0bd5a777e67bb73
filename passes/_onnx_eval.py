"""Evaluate one IR op on concrete arrays with `onnx.reference` (ONNX semantics).

Used by canonicalize's constant folding and by the test-only graph evaluator.
Core ops carry ONNX's names and attributes, so an op becomes a one-node ONNX
model; annotation attributes (engine, tile, ...) are dropped first.

    evaluate_op(op, [np.ones((2, 3), np.float32)]) -> [array]
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from ir.core import Op
from ir.verifier import ANNOTATIONS

__all__ = ["DEFAULT_OPSET", "evaluate_op", "onnx_evaluable"]

DEFAULT_OPSET = 17
# Ops whose result is not a function of their operands.
_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                               "Multinomial", "Bernoulli"})


def onnx_evaluable(op: Op) -> bool:
    """True when `op` is an ONNX op `onnx.reference` can run deterministically."""
    ns = op.namespace
    return not (op.kind == "const" or ns in ("fused", "quant") or op.kind in _NONDETERMINISTIC)


def _split_kind(kind: str) -> tuple[str, str]:
    if "." in kind:
        domain, op_type = kind.rsplit(".", 1)
        return domain, op_type
    return "", kind


def _onnx_attr(name: str, value: Any):
    import onnx
    from onnx import numpy_helper

    if isinstance(value, np.ndarray):
        if value.dtype == object:
            value = value.astype(str)
        if value.dtype.kind == "U":
            t = onnx.helper.make_tensor(name, onnx.TensorProto.STRING, value.shape,
                                        [s.encode() for s in value.reshape(-1).tolist()])
            return onnx.helper.make_attribute(name, t)
        return onnx.helper.make_attribute(name, numpy_helper.from_array(value))
    if isinstance(value, (list, tuple)) and not value:
        return None  # an empty list has no ONNX type; ONNX treats it as absent
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    return onnx.helper.make_attribute(name, value)


def _node(op: Op):
    import onnx

    domain, op_type = _split_kind(op.kind)
    domain = op.attrs.get("domain", domain) if isinstance(op.attrs.get("domain"), str) else domain
    inputs = ["" if v is None else f"in{i}" for i, v in enumerate(op.operands)]
    while inputs and inputs[-1] == "":
        inputs.pop()
    outputs = [f"out{i}" for i in range(len(op.results))]
    node = onnx.helper.make_node(op_type, inputs, outputs, domain=domain or None)
    for k, v in op.attrs.items():
        if k in ANNOTATIONS or k.startswith("_"):
            continue
        a = _onnx_attr(k, v)
        if a is not None:
            node.attribute.append(a)
    return node


@lru_cache(maxsize=256)
def _evaluator(key: bytes, domain: str, opset: int):
    import onnx
    from onnx.reference import ReferenceEvaluator

    node = onnx.NodeProto.FromString(key)
    opsets = {"": opset if not domain else DEFAULT_OPSET}
    if domain:
        opsets[domain] = opset if domain != "ai.onnx.ml" else min(opset, 5)
    return ReferenceEvaluator(node, opsets=opsets)


def evaluate_op(op: Op, inputs: Sequence[np.ndarray | None], opset: int | None = None) -> list[np.ndarray]:
    """Run `op` on `inputs` (None for absent operands) with `onnx.reference`."""
    node = _node(op)
    if opset is None:
        opset = op.attrs.get("opset")
        if opset is None and op.graph is not None:
            opset = op.graph.attrs.get("opset")
    opset = int(opset or DEFAULT_OPSET)
    sess = _evaluator(node.SerializeToString(), node.domain, opset)
    feeds = {f"in{i}": np.asarray(a) for i, a in enumerate(inputs) if a is not None}
    outs = sess.run(None, feeds)
    return [np.asarray(o) for o in outs]
