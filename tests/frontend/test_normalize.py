"""One IR form: old-opset attribute forms, auto_pad, Constant nodes, opaque ops."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import import_onnx
from ir import DType, TensorType, verify
from ir.errors import UnsupportedModelError
from tests.frontend.helpers import one_node_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _single(g, kind):
    ops = [op for op in g.ops if op.kind == kind]
    assert len(ops) == 1, [op.kind for op in g.ops]
    return ops[0]


def test_conv_auto_pad_same_upper_becomes_pads():
    w = np.ones((8, 3, 3, 3), np.float32)
    m = one_node_model("Conv", {"x": (F, [1, 3, 10, 10])}, ["y"], inits={"w": w}, auto_pad="SAME_UPPER",
                       strides=[2, 2])
    g = import_onnx(m, strict=True)
    verify(g)
    conv = _single(g, "Conv")
    assert "auto_pad" not in conv.attrs
    assert conv.attrs["kernel_shape"] == [3, 3] and conv.attrs["pads"] == [0, 0, 1, 1]
    assert conv.result.type.shape == (1, 8, 5, 5)


def test_pool_auto_pad_same_lower_and_valid():
    m = one_node_model("MaxPool", {"x": (F, [1, 2, 7, 7])}, ["y"], kernel_shape=[2, 2], auto_pad="SAME_LOWER")
    pool = _single(import_onnx(m, strict=True), "MaxPool")
    assert pool.attrs["pads"] == [1, 1, 0, 0] and pool.result.type.shape == (1, 2, 7, 7)
    m = one_node_model("AveragePool", {"x": (F, [1, 2, 7, 7])}, ["y"], kernel_shape=[3, 3], strides=[2, 2],
                       auto_pad="VALID")
    pool = _single(import_onnx(m, strict=True), "AveragePool")
    assert pool.attrs["pads"] == [0, 0, 0, 0] and pool.result.type.shape == (1, 2, 3, 3)


def test_old_squeeze_unsqueeze_axes_become_operands():
    m = one_node_model("Unsqueeze", {"x": (F, [3, 4])}, ["y"], opset=11, axes=[0, 3])
    g = import_onnx(m, strict=True)
    op = _single(g, "Unsqueeze")
    assert "axes" not in op.attrs and list(op.operand_const(1)) == [0, 3]
    assert op.result.type.shape == (1, 3, 4, 1)
    m = one_node_model("Squeeze", {"x": (F, [1, 3, 1])}, ["y"], opset=9, axes=[2])
    assert _single(import_onnx(m, strict=True), "Squeeze").result.type.shape == (1, 3)


def test_old_reduce_and_split_attrs_become_operands():
    m = one_node_model("ReduceMean", {"x": (F, [2, 3, 4])}, ["y"], opset=13, axes=[1], keepdims=0)
    op = _single(import_onnx(m, strict=True), "ReduceMean")
    assert list(op.operand_const(1)) == [1] and op.result.type.shape == (2, 4)
    m = one_node_model("Split", {"x": (F, [6, 2])}, ["a", "b"], opset=11, split=[2, 4])
    op = _single(import_onnx(m, strict=True), "Split")
    assert list(op.operand_const(1)) == [2, 4] and [r.type.shape for r in op.results] == [(2, 2), (4, 2)]
    m = one_node_model("Split", {"x": (F, [6, 2])}, ["a", "b", "c"], opset=11)
    op = _single(import_onnx(m, strict=True), "Split")
    assert op.attrs["num_outputs"] == 3 and [r.type.shape for r in op.results] == [(2, 2)] * 3


def test_opset9_slice_pad_clip_dropout_topk():
    m = one_node_model("Slice", {"x": (F, [5, 6])}, ["y"], opset=9, starts=[1], ends=[4], axes=[1])
    op = _single(import_onnx(m, strict=True), "Slice")
    assert op.result.type.shape == (5, 3) and len(op.operands) == 4 and not op.attrs.keys() - {"name"}
    m = one_node_model("Pad", {"x": (F, [2, 3])}, ["y"], opset=9, pads=[0, 1, 0, 2], value=1.5)
    op = _single(import_onnx(m, strict=True), "Pad")
    assert op.result.type.shape == (2, 6) and float(op.operand_const(2)) == 1.5
    m = one_node_model("Clip", {"x": (F, [4])}, ["y"], opset=9, min=0.0, max=6.0)
    op = _single(import_onnx(m, strict=True), "Clip")
    assert float(op.operand_const(1)) == 0.0 and float(op.operand_const(2)) == 6.0
    assert op.operand_const(1).dtype == np.float32
    m = one_node_model("Dropout", {"x": (F, [4])}, ["y"], opset=10, ratio=0.3)
    op = _single(import_onnx(m, strict=True), "Dropout")
    assert "ratio" not in op.attrs and np.isclose(op.operand_const(1), 0.3)
    m = one_node_model("TopK", {"x": (F, [2, 10])}, ["v", "i"], opset=9, k=3)
    op = _single(import_onnx(m, strict=True), "TopK")
    assert [r.type for r in op.results] == [TensorType(DType.f32, (2, 3)), TensorType(DType.i64, (2, 3))]


def test_old_softmax_on_inner_axis_is_flattened():
    m = one_node_model("Softmax", {"x": (F, [2, 3, 4])}, ["y"], opset=11, axis=1)
    g = import_onnx(m, strict=True)
    verify(g)
    assert [op.kind for op in g.ops] == ["Flatten", "Softmax", "Shape", "Reshape"]
    assert g.outputs[0].name == "y" and g.outputs[0].type == TensorType(DType.f32, (2, 3, 4))
    # on the last axis nothing changes but the explicit axis (the opset-13 default is -1)
    m = one_node_model("Softmax", {"x": (F, [2, 3])}, ["y"], opset=9)
    assert _single(import_onnx(m, strict=True), "Softmax").attrs["axis"] == 1


def test_constant_node_forms():
    nodes = [
        helper.make_node("Constant", [], ["a"], value=numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))),
        helper.make_node("Constant", [], ["b"], value_float=2.0),
        helper.make_node("Constant", [], ["c"], value_ints=[1, 2, 3]),
        helper.make_node("Constant", [], ["d"], value_int=7),
        helper.make_node("Constant", [], ["e"], value_floats=[0.5, 1.5, 2.5]),
        helper.make_node("Mul", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "e"], ["y"]),
        helper.make_node("Identity", ["c"], ["c_out"]),
        helper.make_node("Identity", ["d"], ["d_out"]),
    ]
    g = helper.make_graph(nodes, "consts", [], [helper.make_tensor_value_info("y", F, [2, 3]),
                                                 helper.make_tensor_value_info("c_out", I64, [3]),
                                                 helper.make_tensor_value_info("d_out", I64, [])])
    ir = import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), strict=True)
    verify(ir)
    consts = {op.result.name: op.attrs["value"] for op in ir.ops if op.kind == "const"}
    assert consts["b"].dtype == np.float32 and consts["b"].shape == ()
    assert consts["c"].tolist() == [1, 2, 3] and consts["c"].dtype == np.int64
    assert consts["d"].shape == () and consts["e"].dtype == np.float32
    assert ir.outputs[0].type == TensorType(DType.f32, (2, 3))


def test_opaque_op_keeps_onnx_types_and_opset():
    m = one_node_model("GridSample", {"x": (F, [1, 3, 4, 4]), "grid": (F, [1, 6, 6, 2])}, ["y"], opset=16,
                       mode="bilinear")
    g = import_onnx(m, strict=True)
    op = _single(g, "GridSample")
    assert op.attrs["opset"] == 16 and op.attrs["name"] == "gridsample_0" and op.attrs["mode"] == "bilinear"
    assert op.result.type == TensorType(DType.f32, (1, 3, 6, 6))


def test_opaque_ml_domain_op_is_namespaced():
    m = one_node_model("Normalizer", {"x": (F, [2, 3])}, ["y"], domain="ai.onnx.ml",
                       extra_opsets={"ai.onnx.ml": 1}, norm="L2")
    op = _single(import_onnx(m, strict=True), "ai.onnx.ml.Normalizer")
    assert op.attrs["opset"] == 1 and op.result.type == TensorType(DType.f32, (2, 3))


def test_absent_optional_operands_and_odd_names():
    m = one_node_model("Clip", {"x y": (F, ["batch size", 4])}, ["out/0"], opset=13,
                       inits={"hi": np.array(6.0, np.float32)})
    # make min absent: inputs become ["x y", "", "hi"]
    m.graph.node[0].input[:] = ["x y", "", "hi"]
    g = import_onnx(m, strict=True)
    op = _single(g, "Clip")
    assert op.operands[1] is None and op.operand_const(2) == 6.0
    assert g.inputs[0].name == "x y" and g.outputs[0].name == "out/0"
    # a dim_param that is no symbol or expression gets a parseable name (the .om loader parses every dim)
    assert g.inputs[0].type.shape == ("dim_batch_size_115bac8f", 4)
    from ir import parse, print_graph

    text = print_graph(g)
    assert print_graph(parse(text)) == text


def test_unused_initializers_are_not_loaded():
    m = one_node_model("Relu", {"x": (F, [2])}, ["y"], inits={})
    m.graph.initializer.append(numpy_helper.from_array(np.zeros((64, 64), np.float32), "unused"))
    g = import_onnx(m, strict=True)
    assert g.count("const") == 0


def test_checker_findings_reject_the_model():
    """An attribute the op does not have: onnxruntime refuses the model, so does atcpy (issue 17)."""
    m = one_node_model("Relu", {"x": (F, [2])}, ["y"])
    m.graph.node[0].attribute.append(helper.make_attribute("bogus", 1))
    with pytest.raises(UnsupportedModelError, match="onnx.checker.*bogus"):
        import_onnx(m, diagnostics=[])
    _ = onnx
