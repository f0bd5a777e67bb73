"""Conv as im2col + one BLAS matmul (and the depthwise/1x1 paths) == the reference Conv."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.kernels.conv import conv, conv_transpose
from tests.runtime.helpers import assert_close, ir_single, reference, run_ir


@st.composite
def conv_case(draw):
    nsp = draw(st.integers(1, 3))
    g = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 3))
    mg = draw(st.integers(1, 3))
    k = [draw(st.integers(1, 3)) for _ in range(nsp)]
    s = [draw(st.integers(1, 3)) for _ in range(nsp)]
    d = [draw(st.integers(1, 2)) for _ in range(nsp)]
    p = [draw(st.integers(0, 2)) for _ in range(2 * nsp)]
    size = [draw(st.integers((k[i] - 1) * d[i] + 1, 7)) for i in range(nsp)]
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**16))
    r = np.random.RandomState(seed)
    x = r.standard_normal((n, g * cg, *size)).astype(np.float32)
    w = r.standard_normal((g * mg, cg, *k)).astype(np.float32)
    b = r.standard_normal(g * mg).astype(np.float32) if draw(st.booleans()) else None
    return x, w, b, {"group": g, "strides": s, "dilations": d, "pads": p, "kernel_shape": k}


@settings(max_examples=50, deadline=None)
@given(conv_case())
def test_conv_equals_reference(case):
    x, w, b, attrs = case
    got = conv(x, w, b, attrs)
    want = reference("Conv", [x, w, b], attrs)[0]
    assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attrs", [
    {"group": 8},  # depthwise
    {"group": 8, "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {},  # 1x1 as a pure matmul when the kernel is 1x1
    {"strides": [2, 2]},
])
def test_conv_special_paths_in_session(attrs):
    r = np.random.RandomState(1)
    x = r.standard_normal((2, 8, 9, 9)).astype(np.float32)
    cg = 8 // attrs.get("group", 1)
    k = 3 if attrs.get("group") else 1
    w = r.standard_normal((8, cg, k, k)).astype(np.float32)
    g = ir_single("Conv", [x, w], attrs, consts={1})
    got = run_ir(g, [x, None])[0]
    assert_close(got, reference("Conv", [x, w], attrs)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attrs", [
    {"strides": [2, 2]},
    {"strides": [2, 3], "pads": [1, 0, 1, 2], "output_padding": [1, 0]},
    {"strides": [1, 1], "dilations": [2, 1], "group": 2},
    {"strides": [2, 2], "output_shape": [10, 9]},
    {"strides": [3, 2], "pads": [0, 1, 2, 0], "group": 2, "dilations": [1, 2]},
])
def test_conv_transpose_matches_onnxruntime(attrs):
    r = np.random.RandomState(2)
    x = r.standard_normal((2, 4, 5, 4)).astype(np.float32)
    w = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = r.standard_normal(3 * attrs.get("group", 1)).astype(np.float32)
    got = conv_transpose(x, w, b, attrs)
    want = reference("ConvTranspose", [x, w, b], attrs, engine="ort")[0]
    assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_conv_1d_transpose():
    r = np.random.RandomState(3)
    x = r.standard_normal((1, 2, 6)).astype(np.float32)
    w = r.standard_normal((2, 3, 4)).astype(np.float32)
    attrs = {"strides": [3], "pads": [1, 2]}
    assert_close(conv_transpose(x, w, None, attrs), reference("ConvTranspose", [x, w], attrs, engine="ort")[0],
                 rtol=1e-4, atol=1e-4)
