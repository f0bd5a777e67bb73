"""The ONNX bridge: run an op through ``onnx.reference``'s operator classes.

It is the runtime's AICPU fallback (any kernel without a native
implementation) and the compiler's evaluator of one IR op on concrete arrays
(canonicalize's constant folding, the frontend's import-time folding, the
tests' reference interpreter).  Core ops carry ONNX's names and attributes, so
an op becomes a one-node ONNX model: a NodeProto built from its kind and
attributes (annotations dropped, attribute types taken from the ONNX schema)
and one instance of the operator class for its domain and opset, called as
``instance.run(*inputs)``.  ``onnx`` is imported only when this path is used.

    %t = TopK(%x, %k) {axis = -1, opset = 17, engine = "aicpu"}  ->  load_op("", "TopK", 17)(node, params).run(x, k)
    evaluate_op(op, [np.ones((2, 3), np.float32)]) -> [array]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ir.core import Op
from ir.verifier import ANNOTATIONS

__all__ = ["evaluate_op", "make_aicpu_kernel", "split_kind"]

_DEFAULT_OPSET = 17
_DOMAIN_LOADERS = {
    "ai.onnx.ml": "onnx.reference.ops.aionnxml",
    "ai.onnx.preview": "onnx.reference.ops.aionnx_preview",
    "ai.onnx.preview.training": "onnx.reference.ops.aionnx_preview_training",
    "experimental": "onnx.reference.ops.experimental",
}


def split_kind(kind: str) -> tuple[str, str]:
    """``"ai.onnx.ml.ArrayFeatureExtractor"`` -> (``"ai.onnx.ml"``, ``"ArrayFeatureExtractor"``)."""
    if "." in kind:
        dom, op = kind.rsplit(".", 1)
        return dom, op
    return "", kind


def _attr_proto(name: str, value: Any, schema_attr: Any):
    """An AttributeProto for `value`, typed by the schema when there is one."""
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    if isinstance(value, np.ndarray):
        if schema_attr is None or schema_attr.type == AttributeProto.TENSOR:
            if value.dtype == object or value.dtype.kind == "U":
                t = helper.make_tensor(name, TensorProto.STRING, value.shape,
                                       [str(s).encode() for s in value.reshape(-1).tolist()])
                return helper.make_attribute(name, t)
            return helper.make_attribute(name, numpy_helper.from_array(value))
        value = value.tolist()
    if isinstance(value, (list, tuple)) and not value:
        return None  # an empty list has no ONNX type; ONNX treats it as absent
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if schema_attr is not None:
        t = schema_attr.type
        if t == AttributeProto.FLOAT:
            value = float(value)
        elif t == AttributeProto.INT:
            value = int(value)
        elif t == AttributeProto.FLOATS:
            value = [float(v) for v in value]
        elif t == AttributeProto.INTS:
            value = [int(v) for v in value]
        elif t == AttributeProto.STRING and isinstance(value, str):
            value = value.encode()
        elif t == AttributeProto.TENSOR:
            return helper.make_attribute(name, numpy_helper.from_array(np.asarray(value)))
    return helper.make_attribute(name, value)


def _type_proto(dtype: Any, shape: Any):
    """A tensor TypeProto for an operand given as (IR dtype name or numpy dtype, shape)."""
    from onnx import TensorProto, helper

    from ir.types import DType

    if dtype is None:
        return helper.make_tensor_type_proto(TensorProto.FLOAT, None)
    dt = DType(dtype) if isinstance(dtype, str) else DType.from_numpy(dtype)
    return helper.make_tensor_type_proto(dt.onnx, [d if isinstance(d, int) else None for d in shape])


def _operator(domain: str, op_type: str, version: int, node: Any, in_types: list[tuple[Any, Any]]):
    """The ``onnx.reference`` operator class for `node`."""
    import importlib

    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import RuntimeContextError

    if domain == "":
        from onnx.reference.ops import load_op

        try:
            return load_op("", op_type, version, evaluator_cls=ReferenceEvaluator)
        except RuntimeContextError:  # defined by a function whose body depends on the input types
            types = [_type_proto(dt, shape) for dt, shape in in_types]
            return load_op("", op_type, version, node=node, input_types=types, evaluator_cls=ReferenceEvaluator)
    if domain in _DOMAIN_LOADERS:
        return importlib.import_module(_DOMAIN_LOADERS[domain]).load_op(domain, op_type, version)
    raise NotImplementedError(f"no AICPU kernel for {domain}.{op_type}: domain {domain!r} has no "
                              f"onnx.reference operators")


def make_aicpu_kernel(kind: str, attrs: dict[str, Any], opset: int | None, in_types: list[tuple[Any, Any]],
                      n_outputs: int):
    """A kernel function running `kind` through its ``onnx.reference`` implementation.

    `in_types` holds one ``(dtype, shape)`` per operand (``(None, None)`` when
    absent); dtype is an IR dtype name or a numpy dtype."""
    from onnx import defs, helper
    from onnx.reference import ReferenceEvaluator

    domain, op_type = split_kind(kind)
    if isinstance(attrs.get("domain"), str):
        domain = attrs["domain"]
    version = int(opset or _DEFAULT_OPSET)
    try:
        sattrs = dict(defs.get_schema(op_type, version, domain).attributes)
    except Exception:  # noqa: BLE001 - unknown to this onnx: let load_op report it
        sattrs = {}
    n_in = len(in_types)
    while n_in and in_types[n_in - 1][0] is None:
        n_in -= 1  # trailing absent optional inputs are simply left out
    in_names = [f"i{i}" if in_types[i][0] is not None else "" for i in range(n_in)]
    node = helper.make_node(op_type, in_names, [f"o{i}" for i in range(n_outputs)], domain=domain or None)
    for k, v in sorted(attrs.items()):
        if k not in ANNOTATIONS and not k.startswith("_") and v is not None:
            a = _attr_proto(k, v, sattrs.get(k))
            if a is not None:
                node.attribute.append(a)
    run_params = {
        "log": lambda *a: None, "opsets": {domain: version, "": max(version, 1) if domain else version},
        "verbose": 0, "new_ops": {}, "existing_functions": {}, "evaluator_cls": ReferenceEvaluator,
    }
    inst = _operator(domain, op_type, version, node, in_types[:n_in])(node, run_params)

    def run(inputs, attrs_, out, inst=inst, n_in=n_in):
        res = inst.run(*inputs[:n_in])
        if not isinstance(res, (tuple, list)):
            res = (res,)
        return [np.asarray(r) for r in res]

    return run


def evaluate_op(op: Op, inputs: Sequence[np.ndarray | None], opset: int | None = None) -> list[np.ndarray]:
    """Run `op` on `inputs` (None for absent operands) with `onnx.reference`.

    An op of the default domain runs at the latest opset this ``onnx`` knows, as the
    IR holds declared ops in their latest-ONNX form; `opset` is ignored for it.  An
    op of another domain runs at `opset`, else its ``opset`` attribute (the
    domain's opset the frontend recorded)."""
    from onnx.defs import onnx_opset_version

    domain, _ = split_kind(op.kind)
    if isinstance(op.attrs.get("domain"), str):
        domain = op.attrs["domain"]
    version = onnx_opset_version() if domain == "" else opset or op.attrs.get("opset") or 1
    arrays = [None if a is None else np.asarray(a) for a in inputs]
    in_types = [(None, None) if a is None else (a.dtype, a.shape) for a in arrays]
    run = make_aicpu_kernel(op.kind, op.attrs, version, in_types, len(op.results))
    return run(arrays, op.attrs, None)
