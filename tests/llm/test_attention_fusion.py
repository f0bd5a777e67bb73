"""fused.attention (issue 15): the kernel against a NumPy reference, the pass's
rewrite kept the meaning, and the three optimum decoders fused one attention per
layer — GQA's repeat of K/V gone — still matching onnxruntime in fp32 and fp16.
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_model
from ir.parser import parse
from ir.verifier import verify
from passes import PassContext
from passes.manager import PassManager
from runtime import Session
from runtime.kernels.attention import attention
from tests.llm.decoders import KINDS, decoder_feeds
from tests.passes._eval import run_graph

DIMS = "sequence_length:1~64;past_sequence_length:0~63;batch_size:1~2"
POINTS = [(8, 0), (1, 8), (1, 63)]


# -- the kernel ----------------------------------------------------------------------
def _reference(q, k, v, mask, scale, guard, causal=False):
    """Repeat K/V per query head (what the exports do), softmax in float64."""
    g = q.shape[1] // k.shape[1]
    kk, vv = np.repeat(k, g, axis=1).astype(np.float64), np.repeat(v, g, axis=1).astype(np.float64)
    s = q.astype(np.float64) @ kk.transpose(0, 1, 3, 2) * scale
    if mask is not None:
        s = s + mask
    if causal:
        n, length = s.shape[-2:]
        s = np.where(np.arange(length)[None, :] <= np.arange(n)[:, None] + length - n, s, -np.inf)
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
    if guard:
        p = np.where(np.isnan(p), 0.0, p)
    return p @ vv


def _inputs(b, hq, hkv, s, length, d, seed=0, mask_shape=None):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, hq, s, d)).astype(np.float32)
    k = rng.standard_normal((b, hkv, length, d)).astype(np.float32)
    v = rng.standard_normal((b, hkv, length, d)).astype(np.float32)
    mask = None
    if mask_shape is not None:
        mask = np.where(rng.random(mask_shape) < 0.3, -np.inf, 0.0).astype(np.float32)
    return q, k, v, mask


@pytest.mark.parametrize("s,length", [(1, 9), (7, 7), (4, 12)])  # decode, prefill, prefill after a past
@pytest.mark.parametrize("hq,hkv", [(4, 2), (3, 3)])
def test_kernel_matches_reference_gqa_and_masked_rows(s, length, hq, hkv):
    q, k, v, mask = _inputs(2, hq, hkv, s, length, 16, mask_shape=(2, 1, s, length))
    mask[1, 0, 0, :] = -np.inf  # a fully masked row: 0 with the guard
    out = np.full((2, hq, s, 16), np.nan, np.float32)
    got = attention(q, k, v, mask, {"scale": 0.25, "nan_guard": 1}, out)
    assert got is out and got.dtype == np.float32
    want = _reference(q, k, v, mask, 0.25, guard=True)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert not np.any(got[1, :, 0])


def test_kernel_without_guard_keeps_onnx_nan_and_takes_a_per_head_mask():
    q, k, v, mask = _inputs(1, 4, 2, 3, 5, 8, seed=1, mask_shape=(4, 3, 5))  # per head, no batch axis
    mask[2, 1, :] = -np.inf
    got = attention(q, k, v, mask, {"scale": 0.5}, None)
    want = _reference(q, k, v, mask, 0.5, guard=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)  # NaN where the reference has NaN
    assert np.isnan(got[0, 2, 1]).all() and not np.isnan(np.delete(got[0, 2], 1, axis=0)).any()


@pytest.mark.parametrize("s,length", [(1, 6), (6, 6), (3, 8), (5, 2)])
def test_kernel_causal_aligned_to_the_last_key(s, length):
    q, k, v, _ = _inputs(1, 4, 1, s, length, 8, seed=2)
    got = attention(q, k, v, None, {"scale": 0.3, "causal": 1}, None)
    np.testing.assert_allclose(got, _reference(q, k, v, None, 0.3, guard=False, causal=True), rtol=0, atol=2e-6)


def test_kernel_f16_operands_accumulate_in_f32_and_round_once():
    q, k, v, mask = _inputs(1, 4, 2, 5, 9, 16, seed=3, mask_shape=(1, 1, 5, 9))
    q16, k16, v16, m16 = (x.astype(np.float16) for x in (q, k, v, mask))
    out = np.empty((1, 4, 5, 16), np.float16)
    got = attention(q16, k16, v16, m16, {"scale": 0.25, "nan_guard": 1}, out)
    assert got is out
    want = _reference(q16.astype(np.float32), k16.astype(np.float32), v16.astype(np.float32), m16, 0.25, True)
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=2e-3)


def test_kernel_empty_keys_give_zero():
    q, k, v, _ = _inputs(1, 2, 2, 1, 0, 8)
    np.testing.assert_array_equal(attention(q, k, v, None, {}, None), np.zeros((1, 2, 1, 8), np.float32))


# -- the rewrite keeps the meaning ---------------------------------------------------
GQA = """
graph @gqa(%q: tensor<2x4x3x8xf32>, %k: tensor<2x2x5x8xf32>, %v: tensor<2x2x5x8xf32>, %mask: tensor<2x1x3x5xf32>) -> (tensor<2x4x3x8xf32>) {
  %ax = const() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
  %c = const() {value = dense<[0.5]> : tensor<f32>} : () -> tensor<f32>
  %zero = const() {value = dense<[0.0]> : tensor<1xf32>} : () -> tensor<1xf32>
  %s5 = const() {value = dense<[2, 2, 2, 5, 8]> : tensor<5xi64>} : () -> tensor<5xi64>
  %s4 = const() {value = dense<[2, 4, 5, 8]> : tensor<4xi64>} : () -> tensor<4xi64>
  %ku = Unsqueeze(%k, %ax) : (tensor<2x2x5x8xf32>, tensor<1xi64>) -> tensor<2x2x1x5x8xf32>
  %ke = Expand(%ku, %s5) : (tensor<2x2x1x5x8xf32>, tensor<5xi64>) -> tensor<2x2x2x5x8xf32>
  %kr = Reshape(%ke, %s4) : (tensor<2x2x2x5x8xf32>, tensor<4xi64>) -> tensor<2x4x5x8xf32>
  %vu = Unsqueeze(%v, %ax) : (tensor<2x2x5x8xf32>, tensor<1xi64>) -> tensor<2x2x1x5x8xf32>
  %ve = Expand(%vu, %s5) : (tensor<2x2x1x5x8xf32>, tensor<5xi64>) -> tensor<2x2x2x5x8xf32>
  %vr = Reshape(%ve, %s4) : (tensor<2x2x2x5x8xf32>, tensor<4xi64>) -> tensor<2x4x5x8xf32>
  %kt = Transpose(%kr) {perm = [0, 1, 3, 2]} : (tensor<2x4x5x8xf32>) -> tensor<2x4x8x5xf32>
  %qs = Mul(%q, %c) : (tensor<2x4x3x8xf32>, tensor<f32>) -> tensor<2x4x3x8xf32>
  %ks = Mul(%kt, %c) : (tensor<2x4x8x5xf32>, tensor<f32>) -> tensor<2x4x8x5xf32>
  %s = MatMul(%qs, %ks) : (tensor<2x4x3x8xf32>, tensor<2x4x8x5xf32>) -> tensor<2x4x3x5xf32>
  %x = Add(%s, %mask) : (tensor<2x4x3x5xf32>, tensor<2x1x3x5xf32>) -> tensor<2x4x3x5xf32>
  %p = Softmax(%x) {axis = -1} : (tensor<2x4x3x5xf32>) -> tensor<2x4x3x5xf32>
  %n = IsNaN(%p) : (tensor<2x4x3x5xf32>) -> tensor<2x4x3x5xbool>
  %pg = Where(%n, %zero, %p) : (tensor<2x4x3x5xbool>, tensor<1xf32>, tensor<2x4x3x5xf32>) -> tensor<2x4x3x5xf32>
  %o = MatMul(%pg, %vr) : (tensor<2x4x3x5xf32>, tensor<2x4x5x8xf32>) -> tensor<2x4x3x8xf32>
  return %o
}
"""


def test_rewrite_keeps_the_meaning_through_the_runtime():
    g = parse(GQA)
    q, k, v, mask = _inputs(2, 4, 2, 3, 5, 8, seed=4, mask_shape=(2, 1, 3, 5))
    mask[0, 0, 2, :] = -np.inf
    feeds = {"q": q, "k": k, "v": v, "mask": mask}
    with np.errstate(invalid="ignore"):  # the unfused Softmax of the fully masked row: NaN, then the guard
        before = run_graph(g, feeds)[0]
    ctx = PassContext()
    PassManager.parse("fuse-attention", verify_each=True).run(g, ctx)
    verify(g)
    assert ctx.stats["fusion"]["attention"] == 1
    assert [op.kind for op in g.ops if op.kind != "const"] == ["fused.attention"]
    after = run_graph(g, feeds)[0]
    assert not np.any(after[0, :, 2])  # the fully masked row: 0, as the IsNaN guard made it
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


# -- the decoders --------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled(decoder):
    cache: dict = {}

    def get(kind: str, mode: str = "force_fp32"):
        if (kind, mode) not in cache:
            cache[kind, mode] = compile_model(decoder(kind), dim_range=DIMS, precision_mode=mode)
        return cache[kind, mode]

    return get


def _layers(exe) -> int:
    return sum(i["name"].startswith("past_key_values.") for i in exe.program["inputs"]) // 2


@pytest.mark.parametrize("kind", KINDS)
def test_one_attention_per_layer_and_no_repeated_kv(kind, compiled):
    exe = compiled(kind)
    report = exe.header["report"]
    assert report["fusion"]["attention"] == _layers(exe) == 2
    steps, acts = exe.program["steps"], exe.program["activations"]
    assert sum(s["kernel"] == "fused.attention" for s in steps) == 2
    assert all(s["engine"] == "cube" for s in steps if s["kernel"] == "fused.attention")
    assert not any(s["kernel"] == "Softmax" for s in steps)
    # GQA's Unsqueeze -> Expand -> Reshape of K/V ([B, Hkv, g, L, D]) is gone: what Expands remain are the mask's
    for s in steps:
        if s["kernel"] == "Expand":
            out = acts[s["outputs"][0]]
            assert len(out["shape"]) != 5, f"{kind}: {s['name']} still repeats K/V"
    if kind in ("llama", "qwen2"):  # the fused op reads the un-repeated cache: 2 KV heads for 4 query heads
        att = next(s for s in steps if s["kernel"] == "fused.attention")
        q, k = (acts[ref[1]]["shape"] for ref in att["inputs"][:2])
        assert q[1] == 4 and k[1] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_matches_onnxruntime(kind, decoder, compiled, ort_session):
    path = decoder(kind)
    sess, ref = Session(compiled(kind)), ort_session(path)
    for seq, past in POINTS:
        feeds = decoder_feeds(path, 1, seq, past, 0)
        for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=f"{kind} at {(seq, past)}")


@pytest.mark.parametrize("kind", KINDS)
def test_left_padding_fully_masked_rows_match_onnxruntime(kind, decoder, compiled, ort_session):
    """A left-padded batch row: the padded queries see no key at all (the exports'
    IsNaN guard makes their attention 0), the others skip the padding."""
    path = decoder(kind)
    feeds = decoder_feeds(path, 2, 6, 0, 1)
    feeds["attention_mask"][1, :3] = 0
    sess, ref = Session(compiled(kind)), ort_session(path)
    for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=kind)


@pytest.mark.parametrize("kind", KINDS)
def test_force_fp16_logits_within_fp16_tolerance(kind, decoder, compiled, ort_session):
    path = decoder(kind)
    exe = compiled(kind, "force_fp16")
    att = [s for s in exe.program["steps"] if s["kernel"] == "fused.attention"]
    assert len(att) == 2 and all(s["attrs"].get("precision") == "fp16" for s in att)
    sess, ref = Session(exe), ort_session(path)
    for seq, past in POINTS:
        feeds = decoder_feeds(path, 1, seq, past, 0)
        got, want = sess.run(["logits"], feeds)[0], ref.run(["logits"], feeds)[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-3, err_msg=f"{kind} fp16 at {(seq, past)}")
        cos = float(got.ravel() @ want.ravel() / np.linalg.norm(got) / np.linalg.norm(want))
        assert cos > 0.9999, f"{kind} fp16 at {(seq, past)}: cosine {cos}"
