"""The Cube kernels' fast paths keep the numbers of the straightforward ones.

- f16 operands accumulate in f32 (as the Cube's L0C) and are rounded to f16 once,
  after the bias/activation epilogue;
- a float Cube op with a tile plan gives the numbers of `tiling.tiled_matmul`'s
  tile loop (up to rounding: it runs as one BLAS call);
- depthwise convs (the "wide row" stride-1 path and the strided path) equal the
  reference Conv;
- a session's scratch buffers are sized by the first run and reused after it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen import build_executable
from runtime.kernels import lookup_kernel
from runtime.kernels.conv import conv
from runtime.kernels.matmul import Scratch
from runtime.kernels.tiling import tiled_matmul
from runtime.session import Session
from tests.runtime.helpers import assert_close, ir_single, reference, run_ir


def _run(kind: str, inputs: list[np.ndarray | None], attrs: dict) -> np.ndarray:
    return lookup_kernel(kind).fn(inputs, dict(attrs), None)[0]


# --- f16: f32 accumulation, one rounding -----------------------------------------------
def test_f16_matmul_add_rounds_once_after_the_bias():
    # 2049 is a tie between the f16 neighbours 2048 and 2050 (rounds to 2048); with the bias
    # added in f32 first, 2050 is exact.  Rounding the product before the bias gives 2048.
    a = np.ones((1, 2049), np.float16)
    w = np.ones((2049, 1), np.float16)
    b = np.ones(1, np.float16)
    for kind, attrs in [("fused.matmul_add", {}), ("fused.matmul_add", {"tile": [16, 16, 256]}),
                        ("fused.matmul_add_relu", {}), ("Gemm", {})]:
        got = _run(kind, [a, w, b], attrs)
        assert got.dtype == np.float16, kind
        assert got[0, 0] == 2050, (kind, attrs, got)


def test_f16_conv_bias_rounds_once():
    x = np.ones((1, 2049, 1, 1), np.float16)
    w = np.ones((1, 2049, 1, 1), np.float16)
    b = np.ones(1, np.float16)
    for kind, attrs in [("Conv", {}), ("fused.conv", {"act": "relu"}), ("Conv", {"tile": [256, 16, 256]})]:
        got = _run(kind, [x, w, b], attrs)
        assert got.dtype == np.float16
        assert got.reshape(-1)[0] == 2050, (kind, attrs, got)


@pytest.mark.parametrize("kind,attrs,shapes", [
    ("MatMul", {}, [(3, 5, 40), (40, 7)]),
    ("MatMul", {"tile": [4, 4, 16]}, [(2, 5, 40), (40, 7)]),
    ("MatMul", {}, [(40,), (40, 7)]),
    ("MatMul", {}, [(3, 40), (40,)]),
    ("Gemm", {"transB": 1, "alpha": 0.5, "beta": 2.0}, [(5, 40), (7, 40), (7,)]),
    ("fused.matmul_relu", {}, [(5, 40), (40, 7)]),
    ("Conv", {"pads": [1, 1, 1, 1]}, [(2, 4, 6, 6), (6, 4, 3, 3), (6,)]),
    ("Conv", {"group": 4, "strides": [2, 2]}, [(1, 4, 7, 7), (4, 1, 3, 3)]),
    ("Conv", {"group": 4, "pads": [1, 1, 1, 1]}, [(1, 4, 7, 7), (4, 1, 3, 3)]),
    ("fused.conv", {"act": "relu", "tile": [16, 4, 16]}, [(1, 4, 6, 6), (6, 4, 3, 3), (6,)]),
])
def test_f16_cube_ops_equal_f32_math_rounded_once(kind, attrs, shapes):
    r = np.random.RandomState(0)
    ins16 = [r.standard_normal(s).astype(np.float16) for s in shapes]
    got = _run(kind, ins16, attrs)
    want = _run(kind, [a.astype(np.float32) for a in ins16], attrs).astype(np.float16)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)


def test_f16_conv_in_a_session_matches_reference():
    r = np.random.RandomState(1)
    x = r.standard_normal((1, 3, 8, 8)).astype(np.float16)
    w = r.standard_normal((4, 3, 3, 3)).astype(np.float16)
    got = run_ir(ir_single("Conv", [x, w], {"pads": [1, 1, 1, 1]}, consts={1}), [x, None])[0]
    want = reference("Conv", [x.astype(np.float32), w.astype(np.float32)], {"pads": [1, 1, 1, 1]})[0]
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), want, rtol=2e-3, atol=2e-3)


# --- the tile plan ------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 90), n=st.integers(1, 70), batch=st.sampled_from([(), (2,)]),
       tm=st.integers(1, 40), tn=st.integers(1, 40), tk=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_planned_float_matmul_gives_the_tile_loops_numbers(m, k, n, batch, tm, tn, tk, seed):
    r = np.random.RandomState(seed)
    a = r.standard_normal((*batch, m, k)).astype(np.float32)
    b = r.standard_normal((k, n)).astype(np.float32)
    got = _run("MatMul", [a, b], {"tile": [tm, tn, tk]})
    assert_close(got, tiled_matmul(a, b, [tm, tn, tk]), rtol=1e-5, atol=1e-5)


def test_planned_conv_gives_the_tile_loops_numbers():
    r = np.random.RandomState(2)
    x = r.standard_normal((2, 20, 9, 9)).astype(np.float32)
    w = r.standard_normal((40, 20, 3, 3)).astype(np.float32)
    tm, tn, tk = 32, 16, 64  # plan for [pixels, Cin*K] x [Cin*K, Cout]
    got = conv(x, w, None, {"pads": [1, 1, 1, 1], "tile": [tm, tn, tk]})
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # [N, C, 9, 9, 3, 3]
    cols = np.ascontiguousarray(cols.transpose(0, 2, 3, 1, 4, 5)).reshape(2, 81, 180)
    for i in range(2):
        want = tiled_matmul(cols[i], w.reshape(40, 180).T, [tm, tn, tk])  # [pixels, Cout]
        assert_close(got[i].reshape(40, 81), want.T, rtol=1e-5, atol=1e-5)


# --- depthwise --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,k,attrs", [
    ((2, 6, 9, 8), (3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 5, 10, 10), (3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ((1, 4, 11), (5,), {"pads": [2, 1]}),
    ((1, 3, 5, 6, 7), (3, 3, 3), {"pads": [1, 0, 1, 1, 0, 1]}),
    ((1, 6, 9, 9), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 6, 9, 9), (3, 3), {"strides": [1, 2]}),
    ((1, 6, 9, 9), (3, 3), {"auto_pad": "SAME_UPPER"}),
    ((2, 6, 40, 40), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # the tap form: rows >= 16
    ((1, 40, 64, 64), (5, 5), {"strides": [2, 2], "pads": [2, 2, 2, 2]}),  # ... over three channel blocks
    ((2, 20, 60, 60), (3, 3), {"pads": [1, 1, 1, 1]}),  # stride 1, wide rows: the in-cache tap sums
    ((1, 30, 14, 14), (5, 5), {"pads": [4, 4, 4, 4], "dilations": [2, 2]}),  # ... dilated
    ((1, 8, 50, 45), (7, 7), {"pads": [3, 2, 3, 4]}),  # ... 7x7, uneven pads
])
def test_depthwise_paths_equal_reference(shape, k, attrs):
    r = np.random.RandomState(3)
    c = shape[1]
    x = r.standard_normal(shape).astype(np.float32)
    w = r.standard_normal((c, 1, *k)).astype(np.float32)
    b = r.standard_normal(c).astype(np.float32)
    attrs = {"group": c, **attrs}
    scratch = {"_scratch": Scratch()}
    for _ in range(2):  # the second call reuses (dirty) scratch buffers
        got = conv(x, w, b, {**attrs, **scratch})
        assert_close(got, reference("Conv", [x, w, b], attrs)[0], rtol=1e-5, atol=1e-5)


# --- session scratch ----------------------------------------------------------------------------
def test_session_scratch_is_sized_by_the_first_run_and_reused():
    r = np.random.RandomState(4)
    x = r.standard_normal((1, 4, 10, 10)).astype(np.float32)
    w = r.standard_normal((8, 4, 3, 3)).astype(np.float32)
    g = ir_single("Conv", [x, w], {"pads": [1, 1, 1, 1]}, consts={1})
    sess = Session(build_executable(g, soc_version="Ascend310P3").to_bytes())
    first = sess.run(None, {"x0": x})[0]
    size = sess._scratch.nbytes
    assert size > 0
    x2 = r.standard_normal(x.shape).astype(np.float32)
    second = sess.run(None, {"x0": x2})[0]
    assert sess._scratch.nbytes == size
    third = sess.run(None, {"x0": x})[0]
    np.testing.assert_array_equal(first, third)
    assert_close(second, reference("Conv", [x2, w], {"pads": [1, 1, 1, 1]})[0], rtol=1e-4, atol=1e-4)


# --- steps on constants run once, at load ------------------------------------------------------
def test_constant_steps_are_folded_at_load():
    from ir import DType, Graph, TensorType

    f32 = DType.from_numpy(np.dtype(np.float32))
    g = Graph("fold")
    x = g.add_input("x", TensorType(f32, (2, 3)))
    w = g.const(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    neg = g.add_op("Neg", [w], names=["negw"]).result  # constant: folded
    sq = g.add_op("Mul", [neg, neg], names=["sq"]).result  # constant through a folded value
    y = g.add_op("Add", [x, sq], names=["y"]).result
    g.outputs = [y, neg]
    sess = Session(build_executable(g, soc_version="Ascend310P3").to_bytes())
    assert len(sess.folded_steps) == 2
    assert [st.kernel for st in sess._steps] == ["Add"]
    xv = np.ones((2, 3), np.float32)
    for _ in range(2):
        got_y, got_neg = sess.run(None, {"x": xv}, profile=True)
        np.testing.assert_array_equal(got_y, 1 + np.arange(6, dtype=np.float32).reshape(2, 3) ** 2)
        np.testing.assert_array_equal(got_neg, -np.arange(6, dtype=np.float32).reshape(2, 3))
        got_neg[...] = 7  # outputs are copies, the folded constant is untouched
    assert len(sess.profile.steps) == 2  # one step per run


def test_random_ops_are_not_folded():
    from ir import DType, TensorType

    f32 = DType.from_numpy(np.dtype(np.float32))
    w = np.zeros((64,), np.float32)
    g = ir_single("RandomUniformLike", [w], {"seed": 0.0, "opset": 18}, consts={0},
                  result_types=[TensorType(f32, (64,))])
    g.inputs = []
    sess = Session(build_executable(g, soc_version="Ascend310P3").to_bytes())
    assert sess.folded_steps == []
    assert sess.run(None, {})[0].shape == (64,)


@pytest.mark.parametrize("shape", [(1, 256, 56, 56), (1, 2048, 7, 7), (2, 3), (7,), (2, 0, 3), (1, 1000, 13, 13)])
def test_fused_relu_equals_maximum_with_nan_and_signed_zero(shape):
    from runtime.kernels.matmul import relu_

    r = np.random.RandomState(5).standard_normal(shape).astype(np.float32)
    if r.size > 2:
        r.flat[0], r.flat[1], r.flat[2] = np.nan, -0.0, -np.inf
    want = np.maximum(r, 0)
    got = relu_(r.copy())
    np.testing.assert_array_equal(got, want)
    strided = r.copy()[..., ::2] if r.ndim else r.copy()
    np.testing.assert_array_equal(relu_(strided), np.maximum(r[..., ::2], 0))
