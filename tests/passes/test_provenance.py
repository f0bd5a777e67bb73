"""Provenance: every .om step lists the ONNX nodes it computes (`_origins`, passes/_rewrite.py),
through BatchNorm folding, fusion, quantization and codegen, for atcpy-compare."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.driver import compile_model
from ir.core import Graph
from ir.types import DType, TensorType
from passes._rewrite import origins, replace_op


def _conv_bn_relu() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w", rng.normal(size=(4, 3, 3, 3))), ("g", rng.uniform(0.5, 1.5, 4)), ("b", rng.normal(size=4)),
        ("m", rng.normal(size=4)), ("v", rng.uniform(0.5, 1.5, 4))]]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _steps(exe) -> list[tuple[str, list[str] | None]]:
    return [(st["kernel"], st["attrs"].get("_origins")) for st in exe.program["steps"]]


def test_fused_conv_lists_conv_bn_relu_in_the_om() -> None:
    assert _steps(compile_model(_conv_bn_relu(), precision_mode="force_fp32")) == [
        ("fused.conv", ["conv", "bn", "relu"])]


def test_quantized_conv_keeps_the_list(tmp_path) -> None:
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32))
    steps = _steps(compile_model(_conv_bn_relu(), precision_mode="allow_quantize", calibration_data=str(cal)))
    assert ("quant.conv", ["conv", "bn", "relu"]) in steps
    assert all(kind in ("quant.conv", "quant.quantize", "quant.dequantize") for kind, _ in steps)


def test_replace_op_takes_the_dead_chain_not_the_live_one() -> None:
    """Neg(Relu(x)) and Exp(Relu(x)): replacing Neg takes Neg's name only (Relu lives on
    in Exp); replacing Exp then takes Exp and Relu, which dies with it."""
    g = Graph("g")
    x = g.add_input("x", TensorType(DType.f32, (2,)))
    r = g.add_op("Relu", [x], {"name": "relu"}).result
    n = g.add_op("Neg", [r], {"name": "neg"})
    e = g.add_op("Exp", [r], {"name": "exp"})
    g.outputs = [n.result, e.result]
    a = g.add_op("Abs", [x], {"name": "abs"}, before=n)
    replace_op(g, n, [a.result])
    assert origins(a) == ["abs", "neg"]
    s = g.add_op("Sigmoid", [x], before=e)
    replace_op(g, e, [s.result])
    assert origins(s) == ["exp", "relu"]
    assert origins(r.producer) == ["relu"] and "_origins" not in r.producer.attrs
