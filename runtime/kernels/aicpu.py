"""AICPU fallback: any kernel without a native implementation runs through
``onnx.reference``'s operator classes.

At load time each such step gets a NodeProto built from its kind and
attributes (annotations dropped, attribute types taken from the ONNX schema)
and one instance of the operator class for its domain and opset; at run time
the step calls ``instance.run(*inputs)``.  ``onnx`` is imported only when a
step needs this path.

    %t = TopK(%x, %k) {axis = -1, opset = 17, engine = "aicpu"}  ->  load_op("", "TopK", 17)(node, params).run(x, k)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ANNOTATIONS", "make_aicpu_kernel", "split_kind"]

# attributes passes add that are not ONNX attributes
ANNOTATIONS = frozenset({
    "engine", "reason", "tile", "tiles", "offsets", "inplace", "cost_cycles", "name", "opset", "domain",
    "quant", "precision",
})
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
    from onnx import AttributeProto, helper, numpy_helper

    if isinstance(value, np.ndarray):
        if schema_attr is not None and schema_attr.type == AttributeProto.TENSOR:
            return helper.make_attribute(name, numpy_helper.from_array(value))
        value = value.tolist()
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
        elif t == AttributeProto.TENSOR and not isinstance(value, np.ndarray):
            return helper.make_attribute(name, numpy_helper.from_array(np.asarray(value)))
    return helper.make_attribute(name, value)


def make_aicpu_kernel(kind: str, attrs: dict[str, Any], opset: int | None, in_types: list[tuple[str, Any]],
                      n_outputs: int):
    """A kernel function running `kind` through its ``onnx.reference`` implementation."""
    import importlib

    from onnx import TensorProto, defs, helper
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import RuntimeContextError

    from ir.types import DType

    domain, op_type = split_kind(kind)
    version = int(opset or _DEFAULT_OPSET)
    try:
        schema = defs.get_schema(op_type, version, domain)
        sattrs = dict(schema.attributes)
    except Exception:  # noqa: BLE001 - unknown to this onnx: let load_op report it
        sattrs = {}
    n_in = len(in_types)
    while n_in and in_types[n_in - 1][0] is None:
        n_in -= 1  # trailing absent optional inputs are simply left out
    in_names = [f"i{i}" if in_types[i][0] is not None else "" for i in range(n_in)]
    out_names = [f"o{i}" for i in range(n_outputs)]
    node_attrs = [
        _attr_proto(k, v, sattrs.get(k)) for k, v in sorted(attrs.items())
        if k not in ANNOTATIONS and not k.startswith("_") and v is not None
    ]
    node = helper.make_node(op_type, in_names, out_names, domain=domain or None)
    node.attribute.extend(node_attrs)
    run_params = {
        "log": lambda *a: None, "opsets": {domain: version, "": max(version, 1) if domain else version},
        "verbose": 0, "new_ops": {}, "existing_functions": {}, "evaluator_cls": ReferenceEvaluator,
    }
    if domain == "":
        from onnx.reference.ops import load_op

        try:
            cls = load_op("", op_type, version, evaluator_cls=ReferenceEvaluator)
        except RuntimeContextError:
            types = []
            for dt, shape in in_types[:n_in]:
                if dt is None:
                    types.append(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
                else:
                    dims = [d if isinstance(d, int) else None for d in shape]
                    types.append(helper.make_tensor_type_proto(DType(dt).onnx, dims))
            cls = load_op("", op_type, version, node=node, input_types=types, evaluator_cls=ReferenceEvaluator)
    elif domain in _DOMAIN_LOADERS:
        cls = importlib.import_module(_DOMAIN_LOADERS[domain]).load_op(domain, op_type, version)
    else:
        raise NotImplementedError(f"no AICPU kernel for {kind!r}: domain {domain!r} has no onnx.reference operators")
    inst = cls(node, run_params)

    def run(inputs, attrs_, out, inst=inst, n_in=n_in):
        res = inst.run(*inputs[:n_in])
        if not isinstance(res, (tuple, list)):
            res = (res,)
        return [np.asarray(r) for r in res]

    return run
