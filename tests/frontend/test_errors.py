"""Malformed models, bad input_shapes, and ops no engine can run (all reported at once)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import import_onnx, precheck
from ir.errors import UnsupportedModelError, UsageError
from tests.frontend.helpers import one_node_model

F = TensorProto.FLOAT


def _relu_model() -> onnx.ModelProto:
    return one_node_model("Relu", {"x": (F, ["N", 4])}, ["y"])


def test_malformed_bytes():
    with pytest.raises(UnsupportedModelError, match="not a valid ONNX model"):
        import_onnx(b"\x08\x07\xff\xff\xff garbage \x00\x01")


def test_truncated_model_bytes():
    data = _relu_model().SerializeToString()
    with pytest.raises(UnsupportedModelError):
        import_onnx(data[: len(data) // 2])


def test_non_onnx_file(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is a text file, not a model\n")
    with pytest.raises(UnsupportedModelError):
        import_onnx(p)
    assert precheck(p) and "ONNX" in precheck(p)[0]


def test_missing_file_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        import_onnx(tmp_path / "nope.onnx")


def test_input_shapes_unknown_name_lists_real_inputs():
    with pytest.raises(UsageError, match=r"'z'.*the inputs are: 'x'"):
        import_onnx(_relu_model(), {"z": [1, 4]})


def test_input_shapes_rank_mismatch():
    with pytest.raises(UsageError, match="rank 2"):
        import_onnx(_relu_model(), {"x": [1, 2, 4]})


def test_input_shapes_override_and_symbols():
    g = import_onnx(_relu_model(), {"x": [3, 4]}, strict=True)
    assert g.inputs[0].type.shape == (3, 4) and g.outputs[0].type.shape == (3, 4)
    g = import_onnx(_relu_model(), strict=True)
    assert g.inputs[0].type.shape == ("N", 4) and g.outputs[0].type.shape == ("N", 4)


def test_old_opset_upgraded_with_version_converter():
    # opsets below 9 go through onnx.version_converter instead of being refused
    g = import_onnx(one_node_model("Relu", {"x": (F, [2])}, ["y"], opset=7), strict=True)
    assert g.attrs["opset"] == 9 and [op.kind for op in g.ops] == ["Relu"]


def test_ml_only_model_needs_no_default_opset():
    x = helper.make_tensor_value_info("x", F, [2, 3])
    y = helper.make_tensor_value_info("y", F, [2, 3])
    node = helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.5)
    m = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)])
    g = import_onnx(m)
    assert [op.kind for op in g.ops] == ["ai.onnx.ml.Binarizer"]


def _body_graph() -> onnx.GraphProto:
    return helper.make_graph(
        [helper.make_node("Identity", ["x"], ["b_out"])], "body", [],
        [helper.make_tensor_value_info("b_out", F, [2])])


def _unsupported_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", F, [2])
    cond = numpy_helper.from_array(np.array(True), "cond")
    trip = numpy_helper.from_array(np.array(3, np.int64), "trip")
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Relu", ["v_in"], ["v_out"])],
        "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", F, [2])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", F, [2])])
    nodes = [
        helper.make_node("If", ["cond"], ["if_out"], name="the_if",
                         then_branch=_body_graph(), else_branch=_body_graph()),
        helper.make_node("Loop", ["trip", "cond", "if_out"], ["loop_out"], name="the_loop", body=loop_body),
        helper.make_node("SequenceConstruct", ["loop_out", "x"], ["seq"], name="make_seq"),
        helper.make_node("SequenceAt", ["seq", "trip"], ["picked"], name="pick"),
        helper.make_node("FancyOp", ["picked"], ["y"], name="custom_fancy", domain="com.example"),
    ]
    g = helper.make_graph(nodes, "bad", [x], [helper.make_tensor_value_info("y", F, [2])], [cond, trip])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 2)])


def test_all_unsupported_ops_reported_at_once():
    with pytest.raises(UnsupportedModelError) as ei:
        import_onnx(_unsupported_model())
    msg = str(ei.value)
    assert "5 ops no engine can run" in msg
    for op, node, opset in [("If", "the_if", 13), ("Loop", "the_loop", 13), ("SequenceConstruct", "make_seq", 13),
                            ("SequenceAt", "pick", 13), ("com.example.FancyOp", "custom_fancy", 2)]:
        assert f"{op} (node '{node}', opset {opset})" in msg, (op, msg)
    assert "subgraph attribute 'body'" in msg and "then_branch" in msg


def test_precheck_lists_the_same_problems():
    problems = precheck(_unsupported_model())
    assert len(problems) == 5
    assert problems[0].startswith("If (node 'the_if', opset 13)")
    assert precheck(_relu_model()) == []


def test_training_op_is_opaque():
    # training-domain ops are tensor arithmetic onnx.reference implements: AICPU runs them
    m = one_node_model("Adagrad", {"r": (F, []), "t": (TensorProto.INT64, []), "x": (F, [2]), "g": (F, [2]),
                                   "h": (F, [2])}, ["x_new", "h_new"], domain="ai.onnx.preview.training",
                       extra_opsets={"ai.onnx.preview.training": 1})
    g = import_onnx(m)
    (op,) = g.ops if len(g.ops) == 1 else [o for o in g.ops if o.kind != "const"]
    assert op.kind == "ai.onnx.preview.training.Adagrad" and op.attrs["opset"] == 1


def test_zipmap_sequence_of_maps_is_unsupported():
    m = one_node_model("ZipMap", {"p": (F, [1, 3])}, ["z"], domain="ai.onnx.ml",
                       extra_opsets={"ai.onnx.ml": 1}, classlabels_int64s=[0, 1, 2])
    with pytest.raises(UnsupportedModelError, match=r"ai\.onnx\.ml\.ZipMap \(node 'zipmap_0', opset 1\)"):
        import_onnx(m)


def test_undefined_tensor_is_reported():
    node = helper.make_node("Relu", ["ghost"], ["y"], name="r")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", F, [2])],
                          [helper.make_tensor_value_info("y", F, [2])])
    with pytest.raises(UnsupportedModelError, match="ghost"):
        import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_opaque_op_without_any_type_is_a_clear_error():
    m = one_node_model("Normalizer", {"x": (F, ["N", 3])}, ["y"], domain="ai.onnx.ml",
                       extra_opsets={"ai.onnx.ml": 1}, norm="L2")
    with pytest.raises(UnsupportedModelError, match=r"ai\.onnx\.ml\.Normalizer \(node 'normalizer_0', opset 1\).*'y'"):
        import_onnx(m)
