"""Regression tests for the dynamic-shape bugs of issue 14: each builds the smallest
model that showed the bug, compiles it and compares with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import compile_model
from ir.core import Graph
from ir.registry import TypeInferenceError
from ir.types import DType, TensorType
from runtime.session import Session

F, I64 = TensorProto.FLOAT, TensorProto.INT64
SOC = "Ascend310P3"


def _model(nodes, inputs, inits: dict[str, np.ndarray], opset: int = 17) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()]
    outs = [helper.make_tensor_value_info(nodes[-1].output[0], F, None)]
    g = helper.make_graph(nodes, "g", ins, outs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ort(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.2).astype(np.float32)


# -- (a) a 0-d fold keeps rank 0 ----------------------------------------------------------
def test_scalar_shape_arithmetic_folds_to_rank0_and_runs():
    """x / sqrt(x.shape[2]) with a symbolic batch (attention's scaling): Gather of a static
    dim folds to a 0-d constant; the Cast and Sqrt folded after it used to become shape (1,)
    (np.ascontiguousarray), and the run failed with "result 0 has shape [1], the program says []"."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i"], ["d"], axis=0),
             helper.make_node("Cast", ["d"], ["df"], to=F),
             helper.make_node("Sqrt", ["df"], ["r"]),
             helper.make_node("Div", ["x", "r"], ["y"])]
    m = _model(nodes, {"x": (F, ["N", 4, 6])}, {"i": np.array(2, np.int64)})
    exe = compile_model(m, soc_version=SOC)
    x = np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32)
    (got,) = Session(exe).run(None, {"x": x})
    np.testing.assert_allclose(got, _ort(m, {"x": x}), rtol=1e-6)


# -- (b) a failed add_op leaves the graph unchanged -------------------------------------------
def test_add_op_whose_inference_fails_leaves_operand_uses_alone():
    g = Graph()
    x = g.add_input("x", TensorType(DType.f32, ("N", 4)))
    t = g.add_input("t", TensorType(DType.i64, (2,)))
    y = g.add_op("Relu", [x]).result
    before = [(u.op, u.index) for u in y.uses], [(u.op, u.index) for u in t.uses]
    with pytest.raises(TypeInferenceError):
        g.add_op("Reshape", [y, t])  # target not constant: the result type must be given
    assert ([(u.op, u.index) for u in y.uses], [(u.op, u.index) for u in t.uses]) == before
    assert y.uses == [] and t.uses == [] and g.count() == 1


def test_symbolic_batch_compiles_with_force_fp16():
    """Flatten the exporters' way (Reshape to Concat(Shape(x)[0], -1)) with a symbolic batch:
    cast-precision's failed re-typing of the Reshape left use records behind, and
    assign-buffers raised KeyError."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Shape", ["r"], ["sh"]),
             helper.make_node("Gather", ["sh", "i0"], ["n"], axis=0),
             helper.make_node("Concat", ["n", "m1"], ["tgt"], axis=0),
             helper.make_node("Reshape", ["r", "tgt"], ["f"]),
             helper.make_node("MatMul", ["f", "w2"], ["m"]),
             helper.make_node("Softmax", ["m"], ["y"], axis=-1)]
    inits = {"w": _w(rng, 4, 3, 3, 3), "b": _w(rng, 4), "w2": _w(rng, 4 * 8 * 8, 5) / 4,
             "i0": np.array([0], np.int64), "m1": np.array([-1], np.int64)}
    m = _model(nodes, {"x": (F, ["N", 3, 8, 8])}, inits)
    exe = compile_model(m, soc_version=SOC, precision_mode="force_fp16")
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    (got,) = Session(exe).run(None, {"x": x})
    np.testing.assert_allclose(got, _ort(m, {"x": x}), atol=2e-3)


# -- (c) Resize types are recomputed once its sizes fold ---------------------------------------
def _fpn(batch: int | str) -> onnx.ModelProto:
    """A two-level FPN/PAN neck: the coarse map is resized to the fine one's size
    (torchvision: F.interpolate(top, size=lat.shape[-2:])), concatenated with it and
    convolved.  ONNX's data propagation stops at the Identity, so ONNX types the Resize
    result 1x8x?x?; the sizes fold to a constant on import (to ``sym.dims`` with a
    symbolic batch)."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]),                                  # 16x16
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1] * 4, strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),                                  # 8x8
             helper.make_node("Conv", ["r2", "l2"], ["top"]),
             helper.make_node("Conv", ["r1", "l1"], ["lat"]),
             helper.make_node("Shape", ["lat"], ["ls"]),
             helper.make_node("Slice", ["ls", "st", "en"], ["hw0"]),
             helper.make_node("Identity", ["hw0"], ["hw"]),
             helper.make_node("Shape", ["top"], ["ts"]),
             helper.make_node("Slice", ["ts", "zero", "two"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["top", "", "", "sizes"], ["up"], mode="nearest"),
             helper.make_node("Concat", ["up", "lat"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "o1"], ["o"], pads=[1] * 4),
             helper.make_node("Relu", ["o"], ["ro"]),
             helper.make_node("Conv", ["ro", "o2"], ["y"], pads=[1] * 4)]
    inits = {"w1": _w(rng, 8, 3, 3, 3), "w2": _w(rng, 8, 8, 3, 3), "l1": _w(rng, 8, 8, 1, 1),
             "l2": _w(rng, 8, 8, 1, 1), "o1": _w(rng, 8, 16, 3, 3), "o2": _w(rng, 4, 8, 3, 3),
             "st": np.array([-2], np.int64), "en": np.array([2**63 - 1], np.int64),
             "zero": np.array([0], np.int64), "two": np.array([2], np.int64)}
    return _model(nodes, {"x": (F, [batch, 3, 16, 16])}, inits)


@pytest.mark.parametrize("batch", [1, "N"])
def test_resize_with_folded_sizes_keeps_backbone_on_cube(batch):
    m = _fpn(batch)
    exe = compile_model(m, soc_version=SOC)
    g = exe.compilation.graph
    (resize,) = [op for op in g.ops if op.kind == "Resize"]
    assert resize.result.type == TensorType(DType.f32, (batch, 8, 16, 16))
    convs = [op for op in g.ops if "conv" in op.kind.lower()]
    assert len(convs) == 6 and all(op.attrs.get("engine") == "cube" for op in convs), \
        [(op.kind, op.attrs.get("engine")) for op in convs]
    assert exe.full_report["ops"]["by_engine"].get("aicpu", 0) == 0  # the Resize has a Vector kernel now
    assert resize.attrs.get("engine") == "vector"
    x = np.random.default_rng(2).standard_normal((1 if batch == 1 else 2, 3, 16, 16)).astype(np.float32)
    (got,) = Session(exe).run(None, {"x": x})
    np.testing.assert_allclose(got, _ort(m, {"x": x}), rtol=1e-4, atol=1e-5)
