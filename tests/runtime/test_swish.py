"""Swish (ONNX opset 24; SiLU is Swish with alpha = 1): an op added in one place —
its declaration in ir/ops/elementwise.py and its kernel in
runtime/kernels/elementwise.py.  Nothing else names it: the frontend imports it,
placement puts it on the Vector unit, codegen and the runtime run it natively."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from compiler import compile_model
from runtime import Session


def _model() -> onnx.ModelProto:
    nodes = [helper.make_node("Swish", ["x"], ["s"]), helper.make_node("Swish", ["s"], ["y"], alpha=0.5)]
    graph = helper.make_graph(nodes, "swish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)])


def test_swish_runs_natively_on_vector_and_matches_onnxruntime():
    model = _model()
    exe = compile_model(model)
    steps = exe.program["steps"]
    assert [(s["kernel"], s["engine"]) for s in steps] == [("Swish", "vector"), ("Swish", "vector")]
    sess = Session(exe)
    x = np.linspace(-8, 8, 128, dtype=np.float32).reshape(2, 64)
    (y,) = sess.run(None, {"x": x})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    (ref,) = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
