"""Regression tests for generic frontend bugs found by the ONNX node-case conformance run
(`bench/conformance.py`)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from compiler.frontend import import_onnx
from compiler.onnx_backend import AtcpyBackend
from tests.frontend.helpers import one_node_model

F = TensorProto.FLOAT


def _reduce_model(keepdims: int, axes_len: int | None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", F, [3, 2, 2])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [axes_len] if axes_len is not None else ["A"])
    rank = 3 if keepdims else 3 - (axes_len or 3)
    y = helper.make_tensor_value_info("y", F, [f"d{i}" for i in range(rank)])
    node = helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=keepdims)
    sq = helper.make_node("Sqrt", ["s"], ["y"])  # a user of the reduction must see a typed value
    return helper.make_model(helper.make_graph([node, sq], "g", [x, axes], [y]),
                             opset_imports=[helper.make_opsetid("", 18)])


def test_reduce_with_runtime_axes_keeps_rank():
    g = import_onnx(_reduce_model(keepdims=1, axes_len=1))
    assert g.outputs[0].type.rank == 3
    g = import_onnx(_reduce_model(keepdims=0, axes_len=2))
    assert g.outputs[0].type.rank == 1


def test_reduce_with_empty_runtime_axes_reduces_everything():
    g = import_onnx(_reduce_model(keepdims=1, axes_len=0))
    assert g.outputs[0].type.shape == (1, 1, 1)
    rep = AtcpyBackend.prepare(_reduce_model(keepdims=0, axes_len=1))
    x = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    (y,) = rep.run([x, np.array([1], np.int64)])
    np.testing.assert_allclose(y, np.sqrt(x.sum(axis=1)), rtol=1e-6)


def _typed_outputs(m: onnx.ModelProto) -> onnx.ModelProto:
    """Graph outputs typed by ONNX shape inference (the checker in Backend.prepare wants them)."""
    inferred = onnx.shape_inference.infer_shapes(m)
    outs = list(inferred.graph.output)
    del m.graph.output[:]
    m.graph.output.extend(outs)
    return m


def test_absent_optional_outputs_before_a_present_one():
    # LSTM with only Y_h: the absent Y in front of it gets its own fresh, typed name
    seq, batch, inp, hid = 2, 1, 3, 4
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 4 * hid, inp)).astype(np.float32)
    r = rng.standard_normal((1, 4 * hid, hid)).astype(np.float32)
    m = one_node_model("LSTM", {"x": (F, [seq, batch, inp])}, ["", "y_h"], inits={"w": w, "r": r},
                       opset=14, hidden_size=hid)
    m.graph.output.pop(0)  # "" is not a graph output
    m = _typed_outputs(m)
    g = import_onnx(m)
    (lstm,) = [op for op in g.ops if op.kind == "LSTM"]
    assert len(lstm.results) == 2 and lstm.results[0].name != lstm.results[1].name
    x = rng.standard_normal((seq, batch, inp)).astype(np.float32)
    (got,) = AtcpyBackend.prepare(m).run([x])
    from onnx.reference import ReferenceEvaluator

    (want,) = ReferenceEvaluator(m).run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_two_absent_outputs_get_distinct_names():
    # Attention with Y and qk_matmul_output but neither present_key nor present_value
    q = (F, [1, 2, 3, 4])
    m = one_node_model("Attention", {"q": q, "k": q, "v": q}, ["y", "", "", "qk"], opset=23)
    m.graph.output.pop(2)
    m.graph.output.pop(1)
    m = _typed_outputs(m)
    g = import_onnx(m)
    (att,) = [op for op in g.ops if op.kind == "Attention"]
    assert len({r.name for r in att.results}) == 4
    feeds = [np.random.default_rng(1).standard_normal((1, 2, 3, 4)).astype(np.float32) for _ in range(3)]
    got = AtcpyBackend.prepare(m).run(feeds)
    from onnx.reference import ReferenceEvaluator

    want = ReferenceEvaluator(m).run(None, dict(zip("qkv", feeds)))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_einsum_explicit_output_order_and_shape():
    # the explicit "->" output was once mistaken for an implicit one (alphabetical labels)
    from onnx import helper as h

    cases = [("ij->ji", [[3, 4]], (4, 3)), ("ij->i", [[3, 4]], (3,)),
             ("bij, bjk -> bik", [[5, 2, 3], [5, 3, 4]], (5, 2, 4)), ("ij,jk", [[2, 3], [3, 4]], (2, 4))]
    for eq, shapes, want in cases:
        ins = [h.make_tensor_value_info(f"x{i}", F, s) for i, s in enumerate(shapes)]
        n = h.make_node("Einsum", [f"x{i}" for i in range(len(shapes))], ["y"], equation=eq)
        m = h.make_model(h.make_graph([n], "g", ins, [h.make_tensor_value_info("y", F, None)]),
                         opset_imports=[h.make_opsetid("", 17)])
        assert import_onnx(m, strict=True).outputs[0].type.shape == want, eq


def test_space_to_depth_crd_mode_is_kept():
    # opset 28 added `mode`; an undeclared attribute used to be dropped (silently DCR)
    from onnx.reference import ReferenceEvaluator

    x = np.arange(2 * 2 * 4 * 4, dtype=np.float32).reshape(2, 2, 4, 4)
    m = one_node_model("SpaceToDepth", {"x": (F, [2, 2, 4, 4])}, ["y"], opset=28, blocksize=2, mode="CRD")
    m = _typed_outputs(m)
    (op,) = [o for o in import_onnx(m).ops if o.kind == "SpaceToDepth"]
    assert op.attrs["mode"] == "CRD"
    (got,) = AtcpyBackend.prepare(m).run([x])
    np.testing.assert_array_equal(got, ReferenceEvaluator(m).run(None, {"x": x})[0])


def test_batchnorm_training_mode_runs_with_running_statistics():
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(2)
    c = 3
    x = rng.standard_normal((2, c, 4, 5)).astype(np.float32)
    params = {"s": rng.random(c).astype(np.float32), "b": rng.random(c).astype(np.float32),
              "m": rng.random(c).astype(np.float32), "v": rng.random(c).astype(np.float32) + 0.5}
    m = one_node_model("BatchNormalization", {"x": (F, [2, c, 4, 5])}, ["y", "rm", "rv"], inits=params,
                       opset=15, training_mode=1, momentum=0.8)
    m = _typed_outputs(m)
    (bn,) = [o for o in import_onnx(m, strict=True).ops if o.kind == "BatchNormalization"]
    assert [r.type.shape for r in bn.results] == [(2, c, 4, 5), (c,), (c,)]
    got = AtcpyBackend.prepare(m).run([x])
    for a, b in zip(got, ReferenceEvaluator(m).run(None, {"x": x})):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
