"""Bounded symbolic dims end to end on a small attention-like graph: the
exporters' shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Reshape,
past + sequence lengths, Range over positions) folds into the host-side shape
program, every intermediate gets a slot planned at the bounds, and the one `.om`
matches onnxruntime at every shape in range."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from compiler import compile_model
from runtime import Session

DIMS = "batch:1~2;seq:1~16;past_seq:0~15"


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c = {"W": rng.normal(0, .3, (16, 16)).astype(np.float32), "i0": np.array([0], np.int64),
         "s0": np.array(0, np.int64), "s1": np.array(1, np.int64), "s2": np.array(2, np.int64),
         "tail": np.array([2, 8], np.int64), "one": np.array(1, np.int64)}
    n = [h.make_node("MatMul", ["x", "W"], ["hid"]), h.make_node("Shape", ["x"], ["xs"]),
         h.make_node("Gather", ["xs", "s0"], ["b"]), h.make_node("Gather", ["xs", "s1"], ["s"]),
         h.make_node("Unsqueeze", ["b", "i0"], ["bu"]), h.make_node("Unsqueeze", ["s", "i0"], ["su"]),
         h.make_node("Concat", ["bu", "su", "tail"], ["tgt"], axis=0), h.make_node("Reshape", ["hid", "tgt"], ["r"]),
         h.make_node("Transpose", ["r"], ["q"], perm=[0, 2, 1, 3]),
         h.make_node("Concat", ["past", "q"], ["present"], axis=2),
         h.make_node("Transpose", ["present"], ["kt"], perm=[0, 1, 3, 2]), h.make_node("MatMul", ["q", "kt"], ["sc"]),
         h.make_node("Softmax", ["sc"], ["probs"], axis=-1), h.make_node("Shape", ["past"], ["ps"]),
         h.make_node("Gather", ["ps", "s2"], ["plen"]), h.make_node("Add", ["plen", "s"], ["tot"]),
         h.make_node("Range", ["plen", "tot", "one"], ["pos"])]
    g = h.make_graph(n, "attn", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "seq", 16]),
                                 h.make_tensor_value_info("past", T.FLOAT, ["batch", 2, "past_seq", 8])],
                     [h.make_tensor_value_info("probs", T.FLOAT, ["batch", 2, "seq", "tot"]),
                      h.make_tensor_value_info("present", T.FLOAT, ["batch", 2, "tot", 8]),
                      h.make_tensor_value_info("pos", T.INT64, ["seq"])],
                     [nh.from_array(v, k) for k, v in c.items()])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def model():
    return _model()


def test_one_om_matches_onnxruntime_at_every_shape_in_range(model):
    exe = compile_model(model, dim_range=DIMS)
    engines = {(s["kernel"], s["engine"]) for s in exe.program["steps"]}
    assert ("sym.dims", "host") in engines and not any(e == "aicpu" for _, e in engines)
    assert exe.program["dims"] == {"batch": [1, 2], "past_seq": [0, 15], "seq": [1, 16]}
    inputs = {i["act"] for i in exe.program["inputs"]}
    caches = {e["act"] for e in exe.program["kv_cache"]}  # present = Concat(past, new): a KV cache
    assert len(caches) == 1
    assert all(a["offset"] >= 0 for i, a in enumerate(exe.program["activations"]) if i not in inputs | caches)
    sess, ref = Session(exe), ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for b, s, p in [(1, 8, 0), (2, 1, 8), (1, 1, 15), (2, 16, 0), (1, 8, 0)]:
        feeds = {"x": rng.normal(size=(b, s, 16)).astype(np.float32),
                 "past": rng.normal(size=(b, 2, p, 8)).astype(np.float32)}
        for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_without_bounds_it_still_runs_but_plans_nothing_symbolic(model):
    exe = compile_model(model)
    acts = exe.program["activations"]
    assert any(a["offset"] < 0 and not all(isinstance(d, int) for d in a["shape"]) for a in acts)
    feeds = {"x": np.ones((1, 3, 16), np.float32), "past": np.ones((1, 2, 4, 8), np.float32)}
    probs, present, pos = Session(exe).run(None, feeds)
    assert probs.shape == (1, 2, 3, 7)
    assert present.shape == (1, 2, 7, 8) and pos.tolist() == [4, 5, 6]


def test_the_arena_is_planned_at_the_bounds(model):
    small = compile_model(model, dim_range="batch:1~1;seq:1~4;past_seq:0~3").header["memory"]["arena_bytes"]
    big = compile_model(model, dim_range=DIMS).header["memory"]["arena_bytes"]
    assert big > 4 * small  # the bounds, not the shapes of one run, size the plan


def test_the_kv_cache_is_written_in_place_when_the_present_is_fed_back(model):
    """present = Concat(past, new) became a KV cache: feeding each run's present
    (a view of the cache, copy=False) back as the next past writes only the new
    positions; the buffer never moves; results equal onnxruntime's growing past."""
    exe = compile_model(model, dim_range=DIMS)
    (entry,) = exe.program["kv_cache"]
    assert entry["past"] == "past" and entry["capacity"] == [2, 2, 31, 8]  # past 15 + seq 16 at the bounds
    sess, ref = Session(exe), ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    buf = sess.kv_buffers[entry["act"]]
    addr = buf.__array_interface__["data"][0]
    rng = np.random.default_rng(2)
    past = np.zeros((1, 2, 0, 8), np.float32)
    ref_past = past
    for s in (5, 1, 1, 3):
        x = rng.normal(size=(1, s, 16)).astype(np.float32)
        probs, present, _ = sess.run(None, {"x": x, "past": past}, copy=False)
        want_probs, want_present, _ = ref.run(None, {"x": x, "past": ref_past})
        np.testing.assert_allclose(present, want_present, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(probs, want_probs, rtol=1e-5, atol=1e-6)
        assert np.shares_memory(present, buf) and buf.__array_interface__["data"][0] == addr
        past, ref_past = present, want_present
    # a caller's own past (not the cache) is copied in: same answer
    got = sess.run(None, {"x": x, "past": np.array(ref_past)})[1]
    np.testing.assert_allclose(got, ref.run(None, {"x": x, "past": ref_past})[1], rtol=1e-5, atol=1e-6)
