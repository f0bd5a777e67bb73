"""Weight-only INT8/INT4 (``--quant_type=W8A16|W4A16``, issue 16): the group-wise
format's laws, the kernel against dequantize-then-matmul, GPTQ against rounding,
and decoders compiled with it against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passes.quantize_weights import gptq_groups
from runtime.kernels import lookup_kernel
from runtime.kernels.matmul import Scratch
from runtime.kernels.nbits import dequantize_groups, nbits_matmul, pack_int4, quantize_groups, unpack_int4


def _stored(w: np.ndarray, bits: int, group: int, sym: bool):
    codes, s, z = quantize_groups(w, bits, group, sym)
    return (pack_int4(codes, sym) if bits == 4 else codes), s, z


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 70), n=st.integers(1, 9), group=st.sampled_from([2, 4, 8, 32]), bits=st.sampled_from([4, 8]),
       sym=st.booleans(), seed=st.integers(0, 2**16))
def test_groupwise_error_is_at_most_half_a_step(k, n, group, bits, sym, seed):
    """|w' - w| <= s/2 for every weight inside its group's chosen range (odd K and tails
    included); the range search never does worse than the full range; the stored arrays
    have the documented shapes and dtypes."""
    import runtime.kernels.nbits as nb

    w = (np.random.default_rng(seed).standard_normal((k, n)) * 3).astype(np.float32)
    qw, s, z = _stored(w, bits, group, sym)
    g_count = -(-k // group)
    assert s.shape == (g_count, n) and s.dtype == np.float32
    assert qw.shape == (g_count, group // 2 if bits == 4 else group, n)
    assert qw.dtype == (np.uint8 if bits == 4 or not sym else np.int8)
    back = dequantize_groups(qw, s, z, bits, k)
    step = np.repeat(s, group, axis=0)[:k]
    if sym:
        lo = hi = (2 ** (bits - 1) - 1) * step
        lo = -lo
    else:
        zz = np.repeat(z, group, axis=0)[:k]
        lo, hi = -zz * step, (2 ** bits - 1 - zz) * step
    inside = (w >= lo - 1e-6) & (w <= hi + 1e-6)
    assert np.all(np.abs(back - w)[inside] <= step[inside] / 2 * (1 + 1e-5) + 1e-7)
    full = nb.SCALE_SEARCH
    try:
        nb.SCALE_SEARCH = (1.0,)
        qf, sf, zf = _stored(w, bits, group, sym)
    finally:
        nb.SCALE_SEARCH = full
    err = ((back - w) ** 2).sum()
    assert err <= ((dequantize_groups(qf, sf, zf, bits, k) - w) ** 2).sum() * (1 + 1e-6) + 1e-12


@settings(max_examples=40, deadline=None)
@given(g_count=st.integers(1, 4), half=st.integers(1, 8), n=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_int4_packing_round_trips(g_count, half, n, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(-7, 8, (g_count, 2 * half, n)).astype(np.int8)
    packed = pack_int4(codes)
    assert packed.shape == (g_count, half, n) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_int4(packed).astype(np.int16) - 8, codes)
    raw = rng.integers(0, 16, (g_count, 2 * half, n)).astype(np.uint8)
    np.testing.assert_array_equal(unpack_int4(pack_int4(raw, symmetric=False)), raw)


@pytest.mark.parametrize("bits,sym", [(8, True), (8, False), (4, True), (4, False)])
@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("k,group", [(200, 32), (77, 8), (512, 128)])
def test_kernel_equals_dequantize_then_matmul(bits, sym, rows, k, group):
    """One row (the decode path: scales applied to per-group partial sums) and several
    (the prompt path: tiles dequantized) both equal x @ dequantize(W)."""
    rng = np.random.default_rng(k + rows)
    w = rng.standard_normal((k, 24)).astype(np.float32)
    x = rng.standard_normal((1, rows, k)).astype(np.float32)
    qw, s, z = _stored(w, bits, group, sym)
    want = x @ dequantize_groups(qw, s, z, bits, k)
    attrs = {"bits": bits, "group_size": group, "k": k, "n": 24, "_scratch": Scratch()}
    got = nbits_matmul(x, qw, s, z, attrs)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
    ins = [x, qw, s] + ([z] if z is not None else [])
    out = [np.empty((1, rows, 24), np.float32)]
    thunk = lookup_kernel("quant.matmul_nbits").plan(ins, attrs, out)
    thunk()
    np.testing.assert_allclose(out[0], want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("bits,sym", [(4, True), (4, False), (8, True)])
def test_gptq_beats_rounding_on_correlated_inputs(bits, sym):
    rng = np.random.default_rng(0)
    k, n = 128, 32
    x = rng.standard_normal((1024, k)) @ (rng.standard_normal((k, k)) / np.sqrt(k))
    w = rng.standard_normal((k, n)).astype(np.float32)
    rtn = dequantize_groups(*_stored(w, bits, 32, sym), bits, k)
    codes, s, z = gptq_groups(w, x.T @ x, bits, 32, sym)
    gptq = dequantize_groups(pack_int4(codes, sym) if bits == 4 else codes, s, z, bits, k)
    e_rtn, e_gptq = np.linalg.norm(x @ (rtn - w)), np.linalg.norm(x @ (gptq - w))
    assert e_gptq < 0.85 * e_rtn, (e_gptq, e_rtn)


@pytest.mark.parametrize("bits,sym", [(8, True), (4, True), (4, False)])
def test_gathered_rows_equal_the_dequantized_table(bits, sym):
    """An embedding table stored group-wise along D (transposed): the rows gathered are
    the dequantized table's rows, negative indices included."""
    from runtime.kernels.nbits import nbits_gather

    rng = np.random.default_rng(bits)
    table = rng.standard_normal((50, 20)).astype(np.float32)
    qw, s, z = _stored(table.T, bits, 8, sym)
    idx = np.array([[3, -1, 49], [0, 7, 7]], np.int64)
    got = nbits_gather(idx, qw, s, z, bits, 20)
    full = dequantize_groups(qw, s, z, bits, 20).T  # [V, D]
    np.testing.assert_allclose(got, full[idx], rtol=0, atol=1e-6)
    assert np.abs(got - table[idx]).max() <= np.repeat(s, 8, axis=0)[:20].T.max() * 4  # near the floats
    with pytest.raises(IndexError):
        nbits_gather(np.array([50]), qw, s, z, bits, 20)
