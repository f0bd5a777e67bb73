"""ATC's gears: ``--input_shape`` with -1 plus one of ``--dynamic_batch_size``,
``--dynamic_image_size`` or ``--dynamic_dims`` gives ONE `.om` (one copy of the
weights, one plan at the largest gear) that runs every gear and rejects a shape
between them with exit code 5."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import compile_model
from compiler.cli import main as atcpy
from ir.errors import UsageError
from runtime import Session
from runtime.cli import main as atcpy_run
from tests._light import light_model

GEARS = (1, 2, 4, 8)


def _batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose input and output batch dims are named, for onnxruntime."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    return m


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory):
    """Light squeezenet with random weights (the shipped ones give a constant output)."""
    model = light_model("squeezenet", "random")
    path = tmp_path_factory.mktemp("gears") / "squeezenet.onnx"
    onnx.save(model, path)
    return model, path


def test_dynamic_batch_one_om_for_every_gear(squeezenet, tmp_path):
    model, path = squeezenet
    out = tmp_path / "sq"
    assert atcpy([f"--model={path}", "--soc_version=Ascend310P3", f"--output={out}",
                  '--input_shape=data_0:-1,3,224,224', "--dynamic_batch_size=1,2,4,8"]) == 0
    assert atcpy([f"--model={path}", "--soc_version=Ascend310P3", f"--output={tmp_path / 'static'}"]) == 0
    size, static = (tmp_path / "sq.om").stat().st_size, (tmp_path / "static.om").stat().st_size
    assert size <= 1.1 * static  # one copy of the weights, not four
    sess = Session(str(tmp_path / "sq.om"))
    gears = sess.executable.program["gears"]
    assert gears == {"dims": ["batch"], "values": [[g] for g in GEARS]}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(_batch_dynamic(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    for b in GEARS:
        x = np.random.default_rng(b).random((b, 3, 224, 224), np.float32)
        (got,), (want,) = sess.run(None, {"data_0": x}), ref.run(None, {"data_0": x})
        assert got.shape[0] == b
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    report = sess.executable.header["report"]
    per_gear = [g["arena_bytes"] for g in report["gears"]["per_gear"]]
    assert per_gear == sorted(per_gear) and per_gear[-1] == report["memory"]["arena_bytes"]


def test_a_batch_between_gears_is_exit_5_naming_the_gears(squeezenet, tmp_path, capsys):
    _, path = squeezenet
    out = tmp_path / "sq"
    atcpy([f"--model={path}", "--soc_version=Ascend310P3", f"--output={out}",
           '--input_shape=data_0:-1,3,224,224', "--dynamic_batch_size=1,2,4,8"])
    np.save(tmp_path / "x.npy", np.zeros((3, 3, 224, 224), np.float32))
    capsys.readouterr()
    assert atcpy_run([f"--model={out}.om", f"--input={tmp_path / 'x.npy'}", f"--output={tmp_path}"]) == 5
    err = capsys.readouterr().err
    assert "batch=3" in err and "batch=1; batch=2; batch=4; batch=8" in err


def _image_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    g = helper.make_graph(nodes, "img", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("flag, spec, shapes", [
    ("dynamic_image_size", "16,16;24,32", [(16, 16), (24, 32)]),
    ("dynamic_dims", "16,16;24,32", [(16, 16), (24, 32)]),
])
def test_image_size_and_dims_gears(flag, spec, shapes):
    model = _image_model()
    exe = compile_model(model, input_shapes={"x": [1, 3, -1, -1]}, **{flag: spec})
    sess = Session(exe)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for h, w in shapes:
        x = np.random.default_rng(h).random((1, 3, h, w), np.float32)
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opts, message", [
    ({"input_shapes": {"x": [1, 3, -1, -1]}}, "-1 needs one of"),
    ({"input_shapes": {"x": [1, 3, 16, 16]}, "dynamic_batch_size": "1,2"}, "needs --input_shape with -1"),
    ({"input_shapes": {"x": [-1, 3, 16, 16]}, "dynamic_batch_size": "4"}, "between 2 and 100"),
    ({"input_shapes": {"x": [-1, 3, 16, 16]}, "dynamic_batch_size": ",".join(map(str, range(1, 102)))},
     "between 2 and 100"),
    ({"input_shapes": {"x": [-1, 3, 16, 16]}, "dynamic_batch_size": "1,2", "dynamic_dims": "1;2"}, "exclude"),
    ({"input_shapes": {"x": [1, 3, -1, 16]}, "dynamic_batch_size": "1,2"}, "only stand for the batch"),
    ({"input_shapes": {"x": [1, 3, -1, 16]}, "dynamic_image_size": "8,8;16,16"}, "exactly two -1"),
    ({"input_shapes": {"x": [1, 3, -1, -1]}, "dynamic_dims": "8;16"}, "2 value"),
    ({"input_shapes": {"x": [-1, 3, 16, 16]}, "dynamic_batch_size": "1,0"}, "at least 1"),
])
def test_gear_flags_misused_are_usage_errors(opts, message):
    with pytest.raises(UsageError, match=message):
        compile_model(_image_model(), **opts)
