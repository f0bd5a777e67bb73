"""canonicalize + fuse on real exporters' graphs: torch's and skl2onnx's MLPs
become one fused.matmul_add_relu per hidden layer (and still compute the
same as onnxruntime); ResNet-50 (the onnx package's light model) loses every
BatchNormalization and has each Conv+Relu fused."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler.frontend import import_onnx
from passes import PassContext
from passes.manager import PassManager
from tests.passes._eval import run_graph

RESNET = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"


def _kinds(g) -> Counter:
    return Counter(op.kind for op in g.ops if op.kind != "const")


def _optimize(model, **kw):
    g = import_onnx(model, **kw)
    ctx = PassContext()
    PassManager.parse("canonicalize,fuse", verify_each=True).run(g, ctx)
    return g, ctx


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="module")
def torch_mlp() -> onnx.ModelProto:
    import torch  # a test-only tool
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10),
    ).eval()
    f = io.BytesIO()
    torch.onnx.export(net, (torch.zeros(3, 64),), f, dynamo=False, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, opset_version=17)
    return onnx.load_from_string(f.getvalue())


def test_torch_mlp_hidden_layers_fuse(torch_mlp):
    g, ctx = _optimize(torch_mlp)
    k = _kinds(g)
    assert k["fused.matmul_add_relu"] == 2 and k["fused.matmul_add"] == 1
    assert not {"Gemm", "Relu", "Add", "MatMul", "Dropout", "Identity"} & set(k)
    assert ctx.stats["fusion"]["matmul_add_relu"] == 2
    assert [v.name for v in g.outputs] == ["logits"]
    assert g.outputs[0].type.shape[0] == "N"


def test_torch_mlp_same_outputs_as_onnxruntime(torch_mlp):
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    g, _ = _optimize(torch_mlp, input_shapes={"x": [5, 64]})
    (got,) = run_graph(g, {"x": x})
    (want,) = _ort(torch_mlp, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def skl_mlp():
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=60, random_state=0).fit(X[:600], y[:600])
    return to_onnx(clf, X[:1], options={id(clf): {"zipmap": False}}, target_opset=17), X[600:620]


def test_skl2onnx_mlp_hidden_layers_fuse(skl_mlp):
    model, _ = skl_mlp
    before = _kinds(import_onnx(model))
    assert before["Relu"] == 2  # the two hidden layers
    g, _ = _optimize(model)
    k = _kinds(g)
    assert k["fused.matmul_add_relu"] == 2
    assert k["Relu"] == 0
    # the output layer's MatMul+Add fuses too; what Adds remain are not a hidden layer's bias
    for op in g.ops:
        if op.kind == "Add":
            assert not any(v.producer is not None and v.producer.kind == "MatMul" for v in op.operands)


def test_skl2onnx_mlp_same_outputs_as_onnxruntime(skl_mlp):
    model, X = skl_mlp
    name = model.graph.input[0].name
    g, _ = _optimize(model, input_shapes={name: list(X.shape)})
    got = run_graph(g, {name: X})
    want = _ort(model, {name: X})
    np.testing.assert_array_equal(got[0], want[0])  # labels
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-5)  # probabilities


def test_resnet50_bn_folded_and_conv_relu_fused():
    g = import_onnx(RESNET)
    before = _kinds(g)
    ctx = PassContext()
    PassManager.parse("canonicalize,fuse", verify_each=True).run(g, ctx)
    after = _kinds(g)
    assert before["BatchNormalization"] == 53 and after["BatchNormalization"] == 0
    assert ctx.stats["canonicalize"]["bn_into_conv"] == 53
    # every Relu left reads a residual Sum (not a Conv): all Conv+Relu pairs fused
    for op in g.ops:
        if op.kind == "Relu":
            assert op.operands[0].producer.kind != "Conv"
    assert after["fused.conv"] == ctx.stats["fusion"]["conv_relu"] == before["Relu"] - after["Relu"]
    assert after["fused.conv"] + after["Conv"] == before["Conv"]
    assert sum(after.values()) < sum(before.values())


def _conv_hardswish_model() -> onnx.ModelProto:
    """Conv -> HardSwish -> Conv -> HardSwish (mobilenet_v3's stem), opset 17."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 1, (8,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "w2"], ["c2"]),
        helper.make_node("HardSwish", ["c2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, b1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_conv_hardswish_fuses_and_matches_onnxruntime():
    from compiler import compile_model
    from runtime import Session

    model = _conv_hardswish_model()
    x = np.random.default_rng(1).normal(0, 2, (1, 3, 16, 16)).astype(np.float32)
    g, ctx = _optimize(model)
    assert _kinds(g) == Counter({"fused.conv": 2})
    assert [op.attrs["act"] for op in g.ops if op.kind == "fused.conv"] == ["hardswish", "hardswish"]
    assert ctx.stats["fusion"]["conv_hardswish"] == 2
    exe = compile_model(model)
    (y,) = Session(exe).run(None, {"x": x})
    np.testing.assert_allclose(y, _ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_conv_hardswish_epilogue_survives_int8(tmp_path):
    """quantize keeps the fused epilogue (quant.conv act = "hardswish") and its kernel applies it."""
    from compiler import compile_model
    from runtime import Session

    model = _conv_hardswish_model()
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "calib.npz", x=rng.normal(0, 2, (16, 3, 16, 16)).astype(np.float32))  # 16 samples of batch 1
    exe = compile_model(model, precision_mode="allow_quantize", calibration_data=str(tmp_path / "calib.npz"))
    acts = [s["attrs"].get("act") for s in exe.program["steps"] if s["kernel"] == "quant.conv"]
    assert acts == ["hardswish", "hardswish"]
    x = rng.normal(0, 2, (1, 3, 16, 16)).astype(np.float32)
    (y,) = Session(exe).run(None, {"x": x})
    ref = _ort(model, {"x": x})[0]
    cos = float(np.dot(y.ravel(), ref.ravel()) / (np.linalg.norm(y) * np.linalg.norm(ref)))
    assert cos > 0.99  # with the epilogue dropped (act ignored) the cosine falls to about 0.36


def _se_block(gate: str, act: str) -> onnx.ModelProto:
    """A conv stem and a squeeze-excitation block as torchvision writes them (exported by torch)."""
    import torch  # a test-only tool (the test extras install it)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.fc1, self.fc2 = torch.nn.Conv2d(16, 4, 1), torch.nn.Conv2d(4, 16, 1)
            self.act = torch.nn.ReLU() if act == "relu" else torch.nn.SiLU()
            self.gate = torch.nn.Hardsigmoid() if gate == "hardsigmoid" else torch.nn.Sigmoid()

        def forward(self, x):
            y = self.stem(x)
            s = self.gate(self.fc2(self.act(self.fc1(torch.nn.functional.adaptive_avg_pool2d(y, 1)))))
            return s * y

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.onnx.export(Block().eval(), (torch.randn(1, 3, 8, 8),), buf, input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


@pytest.mark.parametrize(("gate", "act"), [("hardsigmoid", "relu"), ("sigmoid", "silu")])
def test_squeeze_excitation_is_one_op_and_computes_what_onnxruntime_does(gate, act):
    from compiler import compile_model
    from runtime import Session

    model = _se_block(gate, act)
    exe = compile_model(model)
    kinds = Counter(s["kernel"] for s in exe.program["steps"])
    assert kinds["fused.se"] == 1 and not kinds["GlobalAveragePool"] and not kinds["Mul"], kinds
    assert exe.header["report"]["fusion"][f"se_{act}_{gate}"] == 1
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (got,) = Session(exe).run(None, {"x": x})
    np.testing.assert_allclose(got, _ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["force_fp32", "force_fp16", "allow_quantize"])
def test_residual_convs_fuse_and_compute_what_onnxruntime_does(precision, tmp_path):
    """torchvision's BasicBlock shortcut (Add then Relu) is one fused.conv with a residual operand
    in fp32 and fp16; an INT8 compile keeps the Add so that both convs are quantized."""
    import torch  # a test-only tool (the test extras install it)

    from compiler import compile_model
    from runtime import Session

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.c2(torch.relu(self.c1(x))) + x)

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.onnx.export(Block().eval(), (torch.randn(1, 8, 8, 8),), buf, input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    rng = np.random.default_rng(1)
    opts = {"precision_mode": precision}
    if precision == "allow_quantize":
        np.savez(tmp_path / "c.npz", x=rng.standard_normal((4, 8, 8, 8)).astype(np.float32))
        opts.update(calibration_data=str(tmp_path / "c.npz"), progress=False)
    exe = compile_model(model, **opts)
    kinds = [s["kernel"] for s in exe.program["steps"]]
    if precision == "allow_quantize":
        assert "conv_residual" not in exe.header["report"]["fusion"] and kinds.count("quant.conv") == 2, kinds
    else:
        assert exe.header["report"]["fusion"].get("conv_residual") == 1
        assert "Add" not in kinds and "Relu" not in kinds, kinds
    x = rng.standard_normal((1, 8, 8, 8)).astype(np.float32)
    (got,) = Session(exe).run(None, {"x": x})
    want = _ort(model, {"x": x})[0]
    cos = float(got.ravel() @ want.ravel() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cos > (0.99 if precision == "allow_quantize" else 0.9999), cos
    if precision == "force_fp32":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
