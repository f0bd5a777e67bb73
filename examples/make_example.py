"""Write the example model `examples/tiny_cnn.onnx` and an input for it.

A small digit classifier (8×8 grayscale, as scikit-learn's digits) in the
shape torch exports: Conv+BatchNorm+Relu, MaxPool, Conv+Relu, Flatten,
Gemm+Relu, Gemm, Softmax.  Weights come from a seeded generator, so the file
is the same on every machine; the point is the compiler's view of it (what
fuses, where it runs, how much memory), not its accuracy.

    python examples/make_example.py   # writes tiny_cnn.onnx and tiny_cnn_input.npy
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def w(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        w("conv1.weight", 16, 1, 3, 3), w("conv1.bias", 16, scale=0.1),
        numpy_helper.from_array(np.abs(rng.standard_normal(16)).astype(np.float32) + 0.5, "bn1.scale"),
        w("bn1.bias", 16, scale=0.1), w("bn1.mean", 16, scale=0.1),
        numpy_helper.from_array(np.abs(rng.standard_normal(16)).astype(np.float32) + 0.5, "bn1.var"),
        w("conv2.weight", 32, 16, 3, 3, scale=0.1), w("conv2.bias", 32, scale=0.1),
        w("fc1.weight", 64, 32 * 4 * 4, scale=0.05), w("fc1.bias", 64, scale=0.1),
        w("fc2.weight", 10, 64, scale=0.2), w("fc2.bias", 10, scale=0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], name="/conv1/Conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["b1"],
                         name="/bn1/BatchNormalization", epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="/conv2/Conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="/relu2/Relu"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], name="/Flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["h"], name="/fc1/Gemm", transB=1),
        helper.make_node("Relu", ["h"], ["hr"], name="/relu3/Relu"),
        helper.make_node("Gemm", ["hr", "fc2.weight", "fc2.bias"], ["logits"], name="/fc2/Gemm", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="/Softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="atcpy-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    onnx.save(build(), HERE / "tiny_cnn.onnx")
    x = (np.random.default_rng(1).random((1, 1, 8, 8)) * 16).astype(np.float32)
    np.save(HERE / "tiny_cnn_input.npy", x)
    print(f"wrote {HERE / 'tiny_cnn.onnx'} and {HERE / 'tiny_cnn_input.npy'}")


if __name__ == "__main__":
    main()
