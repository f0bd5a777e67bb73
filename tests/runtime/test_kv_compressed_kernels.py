"""The compressed KV cache's kernels (``--kv_cache_dtype``, issue 16): int8 rows'
quantization law, ``kv.attention`` over int8 and f16 caches against fp32 attention,
tiled = untiled, and ``kv.append`` storing into the cache buffers.

The bound on int8-KV attention.  With per-row scales ``sk_j`` (key j) and ``sv_j``,
each cached element is off by at most half its row's scale, so a score
``s_j = scale * q·k_j`` is off by at most ``δ = scale * ||q||₁ * max_j sk_j / 2``;
softmax weights then change by a factor within ``e^{±2δ}``, and

    |out_int8 - out_fp32| <= max_j sv_j / 2 + (e^{2δ} - 1) * max_j |v_j|      (per query row)

That is the worst case; on Gaussian K/V (what the tests draw) the error is about
1% of the output's RMS (measured 0.5-0.95% for head_dim 16-128), tested at 1.5%.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime.kernels.attention as attention_kernel
from runtime.kernels import lookup_kernel
from runtime.kernels.attention import attention
from runtime.kernels.kv import dequantize_rows, quantize_rows
from runtime.kernels.matmul import Scratch


def _quantized(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q, s = np.empty(x.shape, np.int8), np.empty(x.shape[:-1], np.float32)
    quantize_rows(x, q, s)
    return q, s


# -- the quantization law ------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 6), d=st.integers(1, 70), spread=st.sampled_from([1e-3, 1.0, 300.0]),
       zero_rows=st.booleans(), seed=st.integers(0, 2**16))
def test_dequantized_rows_are_within_half_a_scale(rows, d, spread, zero_rows, seed):
    """|x - q * scale| <= scale / 2 per element, scale = amax(|row|) / 127 (in f32), |q| <= 127
    with the row's largest element at ±127; an all-zero row has scale 0 and q 0."""
    x = (np.random.default_rng(seed).standard_normal((rows, d)) * spread).astype(np.float32)
    if zero_rows:
        x[0] = 0
    q, s = _quantized(x)
    amax = np.abs(x).max(-1)
    np.testing.assert_array_equal(s, (amax.astype(np.float64) / 127).astype(np.float32))
    back = dequantize_rows(q, s, np.dtype(np.float64))
    assert np.all(np.abs(back - x) <= s[:, None].astype(np.float64) / 2 * (1 + 1e-12))
    assert np.abs(q.astype(int)).max() <= 127
    live = amax > 0
    assert np.all(np.abs(q.astype(int)).max(-1)[live] == 127)
    if zero_rows:
        assert s[0] == 0 and not q[0].any()


# -- kv.attention against fp32 attention ---------------------------------------------------
def _inputs(b, hq, hkv, s, length, d, seed=0, masked=True):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(shape).astype(np.float32)
               for shape in ((b, hq, s, d), (b, hkv, length, d), (b, hkv, length, d)))
    mask = None
    if masked:
        mask = np.where(rng.random((b, 1, s, length)) < 0.2, -np.inf, 0).astype(np.float32)
        mask[..., -1] = 0  # every row sees a key
    return q, k, v, mask


def _bound(q, ks, v, vs, scale):
    """The worst-case bound of the module doc, per query row ``[B, Hq, S, 1]``."""
    g = q.shape[1] // v.shape[1]
    delta = scale * np.abs(q).sum(-1) * np.repeat(ks.max(-1), g, axis=1)[..., None] / 2
    vmax = np.repeat(np.abs(v).max((-1, -2)), g, axis=1)[..., None]
    return (np.repeat(vs.max(-1), g, axis=1)[..., None] / 2 + np.expm1(2 * delta) * vmax)[..., None]


@pytest.mark.parametrize("b,hq,hkv,s,length,d", [(1, 4, 2, 1, 40, 16), (2, 8, 4, 5, 77, 64), (1, 4, 4, 16, 128, 128)])
def test_int8_attention_is_within_the_stated_bound_of_fp32(b, hq, hkv, s, length, d):
    q, k, v, mask = _inputs(b, hq, hkv, s, length, d)
    attrs = {"scale": d ** -0.5, "nan_guard": 1}
    want = attention(q, k, v, mask, attrs, None)
    (kq, ks), (vq, vs) = _quantized(k), _quantized(v)
    got = attention(q, kq, vq, mask, dict(attrs), None, ks, vs)
    assert got.dtype == np.float32 and got.shape == want.shape
    err = np.abs(got - want)
    assert np.all(err <= _bound(q, ks, v, vs, attrs["scale"]) + 1e-6)
    rel = np.sqrt((err ** 2).mean() / (want ** 2).mean())
    assert 1e-4 < rel < 0.015, rel  # about 1% on Gaussian K/V; not 0: the cache really is int8


def test_int8_attention_equals_fp32_attention_of_the_dequantized_cache():
    """The kernel computes exactly attention over ``q * scale`` (the scales move onto the scores)."""
    q, k, v, mask = _inputs(2, 4, 2, 3, 33, 16, seed=1)
    (kq, ks), (vq, vs) = _quantized(k), _quantized(v)
    attrs = {"scale": 0.25, "causal": 1}
    want = attention(q, dequantize_rows(kq, ks, np.dtype(np.float32)), dequantize_rows(vq, vs, np.dtype(np.float32)),
                     mask, attrs, None)
    got = lookup_kernel("kv.attention").fn([q, kq, vq, mask, ks, vs], dict(attrs), None)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_f16_cache_attention_equals_fp32_attention_of_the_rounded_cache():
    q, k, v, mask = _inputs(1, 4, 2, 2, 50, 16, seed=2)
    k16, v16 = k.astype(np.float16), v.astype(np.float16)
    want = attention(q, k16.astype(np.float32), v16.astype(np.float32), mask, {"scale": 0.25}, None)
    got = lookup_kernel("kv.attention").fn([q, k16, v16, mask], {"scale": 0.25}, None)[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_tiles_give_the_untiled_result_and_one_scratch_buffer_of_constant_size(monkeypatch):
    """Widened tile by tile (here 7 keys a tile), the stored K/V give the one-tile result; the
    widened tile's buffer is sized once, not by the cache's length."""
    q, k, v, mask = _inputs(1, 4, 2, 3, 100, 8, seed=3)
    (kq, ks), (vq, vs) = _quantized(k), _quantized(v)
    attrs = {"scale": 0.3, "nan_guard": 1}
    whole = attention(q, kq, vq, mask, dict(attrs), None, ks, vs)
    monkeypatch.setattr(attention_kernel, "_TILE", 7 * 2 * 8)  # batch * heads * head_dim per key
    sizes = []
    for length in (100, 60, 100):
        scratch = Scratch()
        tiled = attention(q, kq[:, :, :length], vq[:, :, :length], mask[..., :length],
                          {**attrs, "_scratch": scratch}, None, ks[:, :, :length], vs[:, :, :length])
        sizes.append(scratch.get(attention_kernel._KV_TILE, (1,), np.float32).base.size)
        if length == 100:
            np.testing.assert_allclose(tiled, whole, rtol=0, atol=2e-6)
    assert sizes[0] == sizes[1] == 7 * 2 * 8 * 4  # one tile of f32, whatever the length


# -- kv.append into the stored cache -------------------------------------------------------
append = lookup_kernel("kv.append").fn


def test_append_int8_quantizes_the_new_positions_into_the_buffers():
    rng = np.random.default_rng(4)
    cache, scales = np.zeros((1, 2, 10, 8), np.int8), np.zeros((1, 2, 10), np.float32)
    past = rng.standard_normal((1, 2, 3, 8)).astype(np.float32)
    new = rng.standard_normal((1, 2, 2, 8)).astype(np.float32)
    attrs = {"axis": 2, "dtype": "i8", "_n_outputs": 2}
    views = [cache[:, :, :5], scales[:, :, :5]]
    res = append([past, new], attrs, views)
    assert len(res) == 2 and res[0] is views[0] and res[1] is views[1]  # the stored results, in place
    want_q, want_s = _quantized(np.concatenate([past, new], axis=2))
    np.testing.assert_array_equal(cache[:, :, :5], want_q)
    np.testing.assert_array_equal(scales[:, :, :5], want_s)
    assert not cache[:, :, 5:].any()
    # outside a session: [present, cache, scales], the present read back from the stored cache
    present, q, s = append([past, new], {"axis": 2, "dtype": "i8"}, None)
    np.testing.assert_array_equal(present, dequantize_rows(want_q, want_s, np.dtype(np.float32)))
    assert present.dtype == np.float32 and q.dtype == np.int8 and s.shape == (1, 2, 5)


def test_append_with_the_held_past_writes_only_the_new_positions():
    held = np.zeros(64, np.uint8)
    cache = np.full((1, 2, 10, 4), 9, np.float16)
    placeholder = np.ndarray((1, 2, 4, 4), np.float32, buffer=held, strides=(0, 0, 4, 0))
    new = np.ones((1, 2, 1, 4), np.float32)
    (r,) = append([placeholder, new], {"axis": 2, "dtype": "f16", "_n_outputs": 1, "_held": held},
                  [cache[:, :, :5]])
    assert (r[:, :, :4] == 9).all() and (r[:, :, 4] == 1).all()  # the past was left as the cache held it
    # the same zeros from elsewhere are a past to store
    (r,) = append([np.zeros((1, 2, 4, 4), np.float32), new], {"axis": 2, "dtype": "f16", "_n_outputs": 1,
                                                             "_held": held}, [cache[:, :, :5]])
    assert (r[:, :, :4] == 0).all()
    with pytest.raises(ValueError, match="held_past"):  # a slice of the held past is not the cache
        append([placeholder[:, :, 1:], new], {"axis": 2, "dtype": "f16", "_n_outputs": 1, "_held": held},
               [cache[:, :, :4]])
