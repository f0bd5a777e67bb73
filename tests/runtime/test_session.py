"""Session: binding, input checks, zero-copy views, dynamic shapes, AICPU fallback, profiling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codegen import build_executable
from ir import DType, Graph, TensorType
from runtime.errors import InputError
from runtime.session import Session
from tests.runtime.helpers import assert_close, ir_single, reference, run_ir

F32 = DType.f32


def mlp() -> Graph:
    g = Graph("mlp")
    x = g.add_input("x", TensorType(F32, ("N", 4)))
    w = g.const(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    b = g.const(np.array([0.5, -1.0, 0.0], np.float32), "b")
    h = g.add_op("fused.matmul_add_relu", [x, w, b]).result
    g.outputs = [g.add_op("Softmax", [h], {"axis": -1}).result]
    return g


def static_chain() -> Graph:
    g = Graph("chain")
    x = g.add_input("x", TensorType(F32, (2, 6)))
    a = g.add_op("Relu", [x]).result
    r = g.add_op("Reshape", [a, g.const(np.array([3, 4], np.int64), "shape")]).result
    t = g.add_op("Neg", [r]).result
    g.outputs = [t, a]
    return g


def test_mlp_with_symbolic_batch():
    sess = Session(build_executable(mlp()).to_bytes())
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.shape, inp.type) == ("x", ["N", 4], "tensor(float)")
    for n in (1, 5):
        x = np.random.RandomState(n).standard_normal((n, 4)).astype(np.float32)
        h = np.maximum(x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10) + [0.5, -1.0, 0.0], 0)
        e = np.exp(h - h.max(-1, keepdims=True))
        (y,) = sess.run(None, {"x": x})
        np.testing.assert_allclose(y, e / e.sum(-1, keepdims=True), rtol=1e-5)


@pytest.mark.parametrize("feeds,words", [
    ({"y": np.zeros((1, 4), np.float32)}, ["'y'", "'x'"]),
    ({}, ["missing", "'x'"]),
    ({"x": np.zeros((1, 4), np.float64)}, ["'x'", "f32", "float64"]),
    ({"x": np.zeros((1, 5), np.float32)}, ["'x'", "tensor<Nx4xf32>", "tensor<1x5xf32>"]),
    ({"x": np.zeros((4,), np.float32)}, ["'x'", "tensor<Nx4xf32>", "tensor<4xf32>"]),
])
def test_bad_inputs_name_the_input_expected_and_received(feeds, words):
    sess = Session(build_executable(mlp()))
    with pytest.raises(InputError) as ei:
        sess.run(None, feeds)
    for w in words:
        assert w in str(ei.value)
    assert ei.value.exit_code == 5


def test_unknown_output_name():
    sess = Session(build_executable(mlp()))
    with pytest.raises(InputError, match="'nope'"):
        sess.run(["nope"], {"x": np.zeros((1, 4), np.float32)})


def test_outputs_are_copies_and_arena_is_one_buffer():
    sess = Session(build_executable(static_chain()))
    x = np.arange(-6, 6, dtype=np.float32).reshape(2, 6)
    t, a = sess.run(None, {"x": x})
    np.testing.assert_array_equal(a, np.maximum(x, 0))
    np.testing.assert_array_equal(t, -np.maximum(x, 0).reshape(3, 4))
    assert not np.shares_memory(t, sess.arena) and not np.shares_memory(a, sess.arena)
    t[...] = 99  # the caller owns the result
    t2, _ = sess.run(None, {"x": x})
    assert t2[0, 0] == 0
    for st in sess._steps:
        for o in st.outs:
            assert o is not None and np.shares_memory(o, sess.arena)


def test_planned_view_aliasing_is_zero_copy():
    """With assign-buffers style offsets (Reshape aliases Relu, Neg in place) the results stay right."""
    g = static_chain()
    relu, reshape, neg = (op for op in g.ops if op.kind != "const")
    relu.attrs["offsets"] = [0]
    reshape.attrs["offsets"] = [0]
    neg.attrs["offsets"] = [64]
    g.attrs["arena_bytes"] = 112
    exe = build_executable(g)
    assert exe.header["memory"]["planned_by"] == "assign-buffers"
    sess = Session(exe)
    assert sess.arena.nbytes == 112
    x = np.arange(-6, 6, dtype=np.float32).reshape(2, 6)
    calls = []
    orig = np.copyto

    def spy(dst, src, **kw):
        calls.append(dst.shape)
        return orig(dst, src, **kw)

    np.copyto = spy
    try:
        t, _a = sess.run(None, {"x": x})
    finally:
        np.copyto = orig
    assert (3, 4) not in calls  # the Reshape result was already in its slot
    np.testing.assert_array_equal(t, -np.maximum(x, 0).reshape(3, 4))


def test_inplace_elementwise_alias():
    g = Graph("inplace")
    x = g.add_input("x", TensorType(F32, (4,)))
    a = g.add_op("Exp", [x]).result
    b = g.add_op("Sigmoid", [a]).result
    c = g.add_op("Add", [b, a]).result
    g.outputs = [c]
    ops = [op for op in g.ops]
    ops[0].attrs["offsets"] = [0]
    ops[1].attrs["offsets"] = [16]
    ops[2].attrs["offsets"] = [16]  # Add writes over its first operand
    xv = np.array([-1, 0, 1, 2], np.float32)
    (y,) = Session(build_executable(g)).run(None, {"x": xv})
    e = np.exp(xv)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-e)) + e, rtol=1e-6)


def test_aicpu_fallback_for_ops_without_native_kernel():
    x = np.random.RandomState(0).standard_normal((3, 5)).astype(np.float32)
    t = [TensorType(F32, (3, 2)), TensorType(DType.i64, (3, 2))]
    g = ir_single("TopK", [x, np.array([2], np.int64)], {"axis": 1, "opset": 17}, consts={1}, result_types=t)
    vals, idx = run_ir(g, [x, None])
    want = reference("TopK", [x, np.array([2], np.int64)], {"axis": 1}, n_outputs=2)
    assert_close(vals, want[0])
    assert_close(idx, want[1])
    g = ir_single("Hardmax", [x], {"axis": 1})
    assert_close(run_ir(g, [x])[0], reference("Hardmax", [x], {"axis": 1})[0])
    g = ir_single("CumSum", [x, np.array(1, np.int64)], {"opset": 17}, consts={1},
                  result_types=[TensorType(F32, (3, 5))])
    assert_close(run_ir(g, [x, None])[0], np.cumsum(x, axis=1), rtol=1e-5, atol=1e-5)


def test_aicpu_ml_domain_op():
    x = np.array([[0.2, 0.7], [0.9, -1.0]], np.float32)
    g = ir_single("ai.onnx.ml.Binarizer", [x], {"threshold": 0.5, "opset": 1},
                  result_types=[TensorType(F32, (2, 2))])
    np.testing.assert_array_equal(run_ir(g, [x])[0], (x > 0.5).astype(np.float32))


def test_profile_table_and_chrome_trace(tmp_path):
    sess = Session(build_executable(static_chain()))
    x = np.ones((2, 6), np.float32)
    sess.run(None, {"x": x}, profile=True)
    sess.run(None, {"x": x}, profile=True)
    assert sess.profile.runs == 2 and len(sess.profile.steps) == 6
    table = sess.profile.table()
    assert "Reshape" in table and "ms/run" in table
    path = sess.profile.write_chrome_trace(tmp_path / "trace.json")
    trace = json.loads(path.read_text())
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == 6 and all(e["dur"] >= 0 for e in xs)


def test_graph_input_and_weight_as_outputs():
    g = Graph("passthru")
    x = g.add_input("x", TensorType(F32, (2,)))
    w = g.const(np.array([1, 2], np.float32), "w")
    g.outputs = [x, w, g.add_op("Add", [x, w]).result]
    xv = np.array([3, 4], np.float32)
    a, b, c = Session(build_executable(g).to_bytes()).run(None, {"x": xv})
    np.testing.assert_array_equal(a, xv)
    np.testing.assert_array_equal(b, [1, 2])
    np.testing.assert_array_equal(c, [4, 6])
    assert b.flags.writeable  # a copy, not the read-only weight view
