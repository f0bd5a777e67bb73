"""A 2-layer MLP 1024→4096→1024 compiles with its matmuls tiled into 256-blocks
(tile counts in the report and in the IR) and matches onnxruntime.  (Float
products run as one BLAS call whatever the plan — `runtime.kernels.matmul`;
``tests/runtime/test_kernels.py`` checks that integer products follow it.)"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compiler import compile_model
from ir import print_graph
from runtime import Session


def mlp(batch: int = 8) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((1024, 4096)) / 32).astype(np.float32)
    w2 = (rng.standard_normal((4096, 1024)) / 64).astype(np.float32)
    b1 = (rng.standard_normal(4096) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal(1024) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["hr"]),
        helper.make_node("MatMul", ["hr", "w2"], ["y0"]),
        helper.make_node("Add", ["y0", "b2"], ["y"]),
    ]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1024])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 1024])],
                          [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b1, "b1"), (b2, "b2"))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the installed onnxruntime reads
    return model


def test_mlp_1024_4096_1024_is_tiled_and_matches_onnxruntime() -> None:
    model = mlp()
    exe = compile_model(model, soc_version="Ascend310P3")
    tiling = exe.report["tiling"]
    # [8,1024]x[1024,4096] -> 1x16x4 tiles; [8,4096]x[4096,1024] -> 1x4x16 tiles
    assert tiling["tiled_ops"] == 2 and tiling["tiles"] == 64 + 64
    text = print_graph(exe.compilation.graph)
    assert "tiles = [1, 16, 4]" in text and "tiles = [1, 4, 16]" in text
    assert exe.report["fusion"].get("matmul_add_relu") == 1 and exe.report["fusion"].get("matmul_add") == 1
    x = np.random.default_rng(1).standard_normal((8, 1024)).astype(np.float32)
    got = Session(exe.to_bytes()).run(None, {"x": x})[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
