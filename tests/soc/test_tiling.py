"""tiled_matmul == np.matmul for any shape and tile (float within tolerance, int8 exactly)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.kernels.tiling import exact_int_k, tiled_matmul

dims = st.integers(1, 1000)
tiles = st.sampled_from([16, 32, 64, 100, 256])


def _budget(m: int, k: int, n: int) -> bool:
    return m * k + k * n + m * n <= 600_000  # keep each example fast


@settings(max_examples=40, deadline=None)
@given(m=dims, k=dims, n=dims, tm=tiles, tn=tiles, tk=tiles, seed=st.integers(0, 2**31 - 1))
def test_float_tiled_equals_matmul(m, k, n, tm, tn, tk, seed):
    if not _budget(m, k, n):
        k = max(1, 600_000 // (m + n + k) // 2)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    got = tiled_matmul(a, b, [tm, tn, tk])
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert got.shape == (m, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@settings(max_examples=40, deadline=None)
@given(m=dims, k=dims, n=dims, tm=tiles, tn=tiles, tk=st.sampled_from([32, 256, 1024, 4096]),
       seed=st.integers(0, 2**31 - 1))
def test_int8_tiled_is_exact(m, k, n, tm, tn, tk, seed):
    if not _budget(m, k, n):
        k = max(1, 600_000 // (m + n + k) // 2)
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    got = tiled_matmul(a, b, [tm, tn, tk])
    want = a.astype(np.int64) @ b.astype(np.int64)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.astype(np.int64), want)


def test_int8_extreme_values_exact_even_with_huge_tile():
    # all -128: every product is 16384, the worst case for float32 accumulation
    k = 5000
    a = np.full((3, k), -128, np.int8)
    b = np.full((k, 2), -128, np.int8)
    got = tiled_matmul(a, b, [256, 256, 10**6])
    assert (got == 16384 * k).all()
    assert exact_int_k(np.dtype(np.int8), np.dtype(np.int8)) == 1024


@settings(max_examples=25, deadline=None)
@given(batch_a=st.sampled_from([(), (1,), (3,), (2, 3)]), batch_b=st.sampled_from([(), (1,), (3,), (2, 1)]),
       m=st.integers(1, 70), k=st.integers(1, 70), n=st.integers(1, 70), seed=st.integers(0, 2**31 - 1))
def test_batched_broadcast_like_np_matmul(batch_a, batch_b, m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((*batch_a, m, k)).astype(np.float32)
    b = rng.standard_normal((*batch_b, k, n)).astype(np.float32)
    try:
        want = np.matmul(a, b)
    except ValueError:
        with pytest.raises(ValueError):
            tiled_matmul(a, b, [16, 16, 16])
        return
    got = tiled_matmul(a, b, [16, 32, 16])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_vector_operands_and_out_buffer():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(50).astype(np.float32)
    b = rng.standard_normal((50, 7)).astype(np.float32)
    np.testing.assert_allclose(tiled_matmul(a, b, [4, 4, 4]), a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tiled_matmul(b.T, a, [4, 4, 4]), b.T @ a, rtol=1e-5, atol=1e-5)
    out = np.empty((7,), np.float32)
    assert tiled_matmul(b.T, a, [3, 3, 3], out=out) is out


def test_f16_inputs_give_f16_result():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 300)).astype(np.float16)
    b = rng.standard_normal((300, 20)).astype(np.float16)
    got = tiled_matmul(a, b, [16, 16, 64])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), a.astype(np.float32) @ b.astype(np.float32), rtol=1e-2, atol=5e-2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="inner dimensions"):
        tiled_matmul(np.zeros((2, 3)), np.zeros((4, 2)), [2, 2, 2])
    with pytest.raises(ValueError, match="positive"):
        tiled_matmul(np.zeros((2, 3)), np.zeros((3, 2)), [0, 2, 2])
