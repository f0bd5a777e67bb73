"""The Vector kernels' fast paths keep the numbers of the plain numpy calls.

- `relu` maxes contiguous data as 16K-element rows against a cached zero row;
- `broadcast_ufunc` shrinks numpy's buffer for broadcasts whose inner run is
  512..4095 elements (a per-channel bias over 28x28 or 56x56 maps) and puts the
  caller's buffer size back, also when the ufunc raises.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.kernels import _inner_run, broadcast_ufunc
from runtime.kernels.elementwise import relu


@pytest.mark.parametrize("shape", [(1, 256, 56, 56), (3, 16384), (16385,), (7,), (0, 4)])
def test_relu_equals_maximum_with_nan_inf_and_signed_zero(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if x.size > 3:
        x.flat[:4] = [np.nan, -0.0, -np.inf, np.inf]
    want = np.maximum(x, 0)
    np.testing.assert_array_equal(relu(x), want)
    y = x.copy()
    assert relu(y, y) is y
    np.testing.assert_array_equal(y, want)


def test_inner_run_is_the_coalesced_trailing_block():
    assert _inner_run((1, 256, 56, 56), (1, 256, 56, 56), (1, 256, 1, 1)) == 3136
    assert _inner_run((1, 256, 28, 28), (1, 1, 28, 28), (1, 256, 28, 28)) == 784
    assert _inner_run((4, 64), (4, 64), (64,)) == 64


SHAPES = st.sampled_from([
    ((1, 96, 56, 56), (1, 96, 1, 1)),
    ((2, 64, 28, 28), (64, 1, 1)),
    ((1, 128, 32, 32), (1, 1, 32, 32)),
    ((8, 1000), (1000,)),
    ((300, 600), (300, 1)),
])


@settings(max_examples=30, deadline=None)
@given(SHAPES, st.sampled_from([np.add, np.multiply, np.subtract, np.maximum]), st.booleans(), st.booleans())
def test_broadcast_ufunc_equals_the_ufunc(shapes, fn, swap, in_place):
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    if swap:
        a, b = b, a
    want = fn(a, b)
    big = a if a.shape == want.shape else b
    out = big if in_place else np.empty_like(want)
    before = np.getbufsize()
    got = broadcast_ufunc(fn, a, b, out)
    assert got is out and np.getbufsize() == before
    np.testing.assert_array_equal(got, want)


def test_broadcast_ufunc_restores_the_buffer_size_when_the_ufunc_raises():
    a = np.zeros((1, 64, 56, 56), np.float32)
    before = np.getbufsize()
    with pytest.raises(TypeError):
        broadcast_ufunc(np.add, a, np.zeros((64, 1, 1), np.float32), a, casting="no", dtype=np.float64)
    assert np.getbufsize() == before
