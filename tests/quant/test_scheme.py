"""Laws of the INT8 scheme and exactness of the integer kernels against int64 numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from runtime.kernels.quant import (
    KERNELS,
    dequantize,
    epilogue,
    int8_conv,
    int8_matmul,
    quantize,
    requantize,
    scale_from_amax,
)

floats = st.floats(-1e4, 1e4, allow_nan=False, width=32)
amaxes = st.floats(1e-3, 1e3, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 64), elements=floats), amaxes)
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(x: np.ndarray, amax: float) -> None:
    s = scale_from_amax(amax)
    inside = np.abs(x) <= amax
    err = np.abs(dequantize(quantize(x, s), s) - x)
    assert np.all(err[inside] <= s / 2 * (1 + 1e-5) + 1e-6 * np.abs(x[inside]))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 64), elements=floats), amaxes)
def test_values_beyond_the_range_saturate_at_127(x: np.ndarray, amax: float) -> None:
    s = scale_from_amax(amax)
    q = quantize(x, s)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    big = np.abs(x) > amax * 1.01
    assert np.all(np.abs(q[big].astype(int)) == 127)
    assert np.all(np.sign(q[big]) == np.sign(x[big]))


@settings(max_examples=25, deadline=None)
@given(amaxes, st.integers(1, 8))
def test_zero_maps_to_zero_and_sign_is_kept(amax: float, n: int) -> None:
    s = scale_from_amax(amax)
    assert np.all(quantize(np.zeros(n, np.float32), s) == 0)
    x = np.linspace(-amax, amax, 2 * n + 1, dtype=np.float32)
    q = quantize(x, s)
    np.testing.assert_array_equal(q, -q[::-1])  # symmetric: no zero point, -128 never used


def test_per_channel_scales_follow_the_axis() -> None:
    w = np.array([[1.0, -100.0], [0.5, 50.0]], np.float32)  # columns are channels
    s = scale_from_amax(np.abs(w).max(axis=0))
    q = quantize(w, s, axis=1)
    np.testing.assert_array_equal(q, [[127, -127], [64, 64]])
    np.testing.assert_allclose(dequantize(q, s, axis=1), w, atol=0.4)
    assert scale_from_amax(np.zeros(3)).tolist() == [1.0, 1.0, 1.0]  # all-zero channel: finite scale


def test_requantize_equals_dequantize_then_quantize() -> None:
    q = np.arange(-127, 128, dtype=np.int8)
    np.testing.assert_array_equal(requantize(q, 0.1, 0.25), quantize(q.astype(np.float32) * np.float32(0.1), 0.25))


i8 = st.integers(-128, 127)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 700), st.integers(1, 6), st.integers(0, 2**31 - 1),
       st.sampled_from([None, [4, 4, 256], [2, 3, 100], [8, 8, 1024]]))
def test_int8_matmul_is_exact(m: int, k: int, n: int, seed: int, tile: list[int] | None) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (2, m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    got = int8_matmul(a, b, tile)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64))


def test_int8_matmul_worst_case_magnitudes_are_exact() -> None:
    a = np.full((1, 4096), -128, np.int8)
    b = np.full((4096, 2), -128, np.int8)
    assert int(int8_matmul(a, b)[0, 0]) == 4096 * 128 * 128


def _conv_ref(x: np.ndarray, w: np.ndarray, strides, pads, dil, group) -> np.ndarray:
    """Direct int64 convolution (loops over output positions), ONNX semantics."""
    n = x.shape[0]
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    oh = (xp.shape[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (xp.shape[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    y = np.zeros((n, m, oh, ow), np.int64)
    mg = m // group
    for o in range(m):
        g = o // mg
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * strides[0]: i * strides[0] + dil[0] * (kh - 1) + 1: dil[0],
                           j * strides[1]: j * strides[1] + dil[1] * (kw - 1) + 1: dil[1]]
                y[:, o, i, j] = (patch * w[o].astype(np.int64)).sum(axis=(1, 2, 3))
    return y


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 2]), st.sampled_from([(1, 1), (2, 1)]),
       st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0)]), st.sampled_from([(1, 1), (1, 2)]),
       st.sampled_from([1, 2]))
def test_int8_conv_is_exact(seed: int, n: int, strides, pads, dil, group) -> None:
    rng = np.random.default_rng(seed)
    c, m = 2 * group, 3 * group
    x = rng.integers(-128, 128, (n, c, 7, 6)).astype(np.int8)
    w = rng.integers(-128, 128, (m, c // group, 3, 2)).astype(np.int8)
    attrs = {"strides": list(strides), "pads": list(pads), "dilations": list(dil), "group": group}
    got = int8_conv(x, w, attrs)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _conv_ref(x, w, strides, pads, dil, group))


def test_large_k_conv_is_exact() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 64, 5, 5)).astype(np.int8)  # K = 64*3*3 = 576 > 256
    w = rng.integers(-128, 128, (4, 64, 3, 3)).astype(np.int8)
    np.testing.assert_array_equal(int8_conv(x, w, {"pads": [1, 1, 1, 1]}), _conv_ref(x, w, (1, 1), (1, 1, 1, 1), (1, 1), 1))


def test_epilogue_adds_bias_in_int32_then_dequantizes_and_requantizes() -> None:
    acc = np.array([[100, -300], [0, 50]], np.int32)
    bias = np.array([10, 20], np.int32)
    ws = np.array([0.5, 0.25], np.float32)
    f = epilogue(acc, bias, ws, -1, {"x_scale": 0.1, "act": "relu", "out": "f32"})
    np.testing.assert_allclose(f, np.maximum((acc + bias) * 0.1 * ws, 0), rtol=1e-6)
    q = epilogue(acc, bias, ws, -1, {"x_scale": 0.1, "act": "relu", "out": "i8", "y_scale": 0.05})
    np.testing.assert_array_equal(q, quantize(f, 0.05))
    assert epilogue(acc, bias, ws, -1, {"x_scale": 0.1, "out": "i32"}).tolist() == [[110, -280], [10, 70]]


def test_matmul_kernel_writes_into_the_given_output() -> None:
    x = np.array([[1, 2]], np.int8)
    w = np.array([[3], [4]], np.int8)
    out = [np.zeros((1, 1), np.float32)]
    res = KERNELS["quant.matmul"]([x, w, None, np.array([2.0], np.float32)], {"x_scale": 0.5, "out": "f32"}, out)
    assert res[0] is out[0] and out[0][0, 0] == pytest.approx(11.0)


def test_every_quant_op_has_a_runtime_kernel() -> None:
    from ir.registry import all_ops
    from runtime.kernels import lookup_kernel

    quant_ops = [k for k in all_ops() if k.startswith("quant.")]
    # the INT8 ops are this module's; weight-only matmuls live in runtime.kernels.nbits
    assert set(quant_ops) - {"quant.matmul_nbits", "quant.gather_nbits"} <= set(KERNELS)
    assert all(lookup_kernel(k) is not None for k in quant_ops)
