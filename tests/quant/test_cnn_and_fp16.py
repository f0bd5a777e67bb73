"""A convolutional model through INT8 (symbolic batch, Conv/MaxPool/Flatten/Gemm)
and the fp16 precision modes through the runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.driver import compile_model
from runtime import Session

FP16_PIPELINE = "canonicalize,fuse,tile{size=256},cast-precision,place,assign-buffers"


def _cnn(path) -> None:
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["X", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=2),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
    ]
    g = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [init("w1", 8, 2, 3, 3), init("b1", 8, scale=0.1), init("w2", 8, 4, 3, 3, scale=0.2),
         init("b2", 8, scale=0.1), init("w3", 10, 128, scale=0.1), init("b3", 10, scale=0.1)],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    _cnn(d / "cnn.onnx")
    x = np.random.default_rng(1).standard_normal((160, 2, 8, 8)).astype(np.float32)
    np.savez(d / "calib.npz", X=x[:100])
    return d / "cnn.onnx", d / "calib.npz", x[100:]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_int8_cnn_with_symbolic_batch(cnn) -> None:
    model, calib, x = cnn
    ref = Session(compile_model(str(model))).run(None, {"X": x})[0]
    exe = compile_model(str(model), precision_mode="allow_quantize", calibration_data=str(calib),
                        calibration_method="percentile", extra={"progress": False})
    g = exe.compilation.graph
    kinds = [op.kind for op in g.ops]
    assert kinds.count("quant.conv") == 2 and kinds.count("quant.matmul") == 1
    assert exe.report["quantization"]["quantized_ops"] == 3
    # the second conv requantizes straight to int8 and Flatten moves int8 data
    flat = next(op for op in g.ops if op.kind == "Flatten")
    assert flat.result.type.dtype.value == "i8"
    got = Session(exe).run(None, {"X": x})[0]
    assert _cos(got, ref) > 0.995
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("mode", ["allow_fp32_to_fp16", "force_fp16"])
def test_fp16_modes_halve_cube_weights_and_stay_close(cnn, mode) -> None:
    model, _, x = cnn
    ref_exe = compile_model(str(model), passes=FP16_PIPELINE)  # force_fp32: the pass does nothing
    exe = compile_model(str(model), precision_mode=mode, passes=FP16_PIPELINE)
    assert exe.report["memory"]["weights_bytes"] < 0.6 * ref_exe.report["memory"]["weights_bytes"]
    cube = [op for op in exe.compilation.graph.ops if op.attrs.get("precision") == "fp16"]
    assert len(cube) == 3 and all(op.results[0].type.dtype.value == "f16" for op in cube)
    ref = Session(ref_exe).run(None, {"X": x})[0]
    got = Session(exe).run(None, {"X": x})[0]
    assert got.dtype == np.float32
    assert _cos(got, ref) > 0.9999
