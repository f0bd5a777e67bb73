"""Tiny builders for one-node ONNX models used by the frontend tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["one_node_model", "onnx_inferred_output"]


def one_node_model(op_type: str, inputs: dict[str, tuple[int, list]], outputs: list[str], *,
                   inits: dict[str, np.ndarray] | None = None, opset: int = 17, domain: str = "",
                   extra_opsets: dict[str, int] | None = None, **attrs) -> onnx.ModelProto:
    """`inputs`: name -> (ONNX elem type, shape); `inits`: constant operands."""
    inits = inits or {}
    names = list(inputs) + list(inits)
    node = helper.make_node(op_type, names, outputs, name=f"{op_type.lower()}_0", domain=domain, **attrs)
    g = helper.make_graph(
        [node], "t",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs],  # untyped (an UNDEFINED elem_type is invalid)
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    return helper.make_model(g, opset_imports=ops)


def onnx_inferred_output(model: onnx.ModelProto, i: int = 0) -> tuple[int, list]:
    """(elem type, dims with None for unknown) of output `i` by ONNX shape inference."""
    m = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    name = model.graph.output[i].name
    for vi in list(m.graph.output) + list(m.graph.value_info):
        if vi.name == name and vi.type.tensor_type.elem_type:
            tt = vi.type.tensor_type
            return tt.elem_type, [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    raise AssertionError(f"ONNX infers nothing for {name}")
