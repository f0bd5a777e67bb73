"""Compressed KV caches, ``--kv_cache_dtype=fp16|int8`` (issue 16): the tiny decoders
compiled with them store the cache as asked (the report counts int8 + scales, or
fp16), still run and generate through the float past/present interface, follow
onnxruntime within the stated tolerances, and decode in place.

Tolerances, measured on the three tiny decoders (random pasts, 1-64 positions):
logits' largest error is 7e-4 (fp16) and 1.7e-2 (int8) of their standard
deviation, tested at 2e-3 and 4e-2; greedy tokens equal fp32's."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_model
from runtime import Generator, Session
from tests.llm.decoders import KINDS, decoder_feeds, export_decoder, generate_traced

DIMS = "sequence_length:1~64;past_sequence_length:0~63;batch_size:1~1"
POINTS = [(8, 0), (1, 8), (4, 20), (1, 63)]  # (sequence, past)
TOLERANCE = {"fp16": 2e-3, "int8": 4e-2}  # largest logit error / the logits' standard deviation


@pytest.fixture(scope="module")
def compiled(decoder):
    cache: dict = {}

    def get(kind: str, dtype: str | None = None, dims: str = DIMS):
        if (kind, dtype, dims) not in cache:
            cache[kind, dtype, dims] = compile_model(decoder(kind), dim_range=dims, kv_cache_dtype=dtype)
        return cache[kind, dtype, dims]

    return get


@pytest.mark.parametrize("kind", KINDS)
def test_the_report_counts_the_cache_as_stored(kind, compiled):
    """fp16 halves the cache; int8 stores head_dim bytes and a 4-byte scale per (head, token)
    where fp32 stores 4 * head_dim: (d + 4) / 4d, 0.31 at head_dim 16 (0.26 at 128)."""
    full = compiled(kind).header["report"]["memory"]
    for dtype, ratio in (("fp16", lambda d: (1, 2)), ("int8", lambda d: (d + 4, 4 * d))):
        exe = compiled(kind, dtype)
        mem = exe.header["report"]["memory"]
        entries = exe.program["kv_cache"]
        d = entries[0]["capacity"][-1]
        num, den = ratio(d)
        assert mem["kv_cache_bytes"] * den == full["kv_cache_bytes"] * num, dtype
        assert mem["kv_cache_bytes_per_token"] * den == full["kv_cache_bytes_per_token"] * num, dtype
        assert mem["total_bytes"] == mem["weights_bytes"] + mem["arena_bytes"] + mem["kv_cache_bytes"]
        assert mem["arena_bytes"] == full["arena_bytes"]  # the float presents take no arena
        assert all(e["dtype"] == {"fp16": "f16", "int8": "i8"}[dtype] for e in entries)
        kernels = [s["kernel"] for s in exe.program["steps"]]
        assert kernels.count("kv.attention") == 2 and "fused.attention" not in kernels  # one per layer
        sess = Session(exe)  # what the session allocates is what the report counts
        assert sum(b.nbytes for b in sess.kv_buffers.values()) == mem["kv_cache_bytes"]
    assert compiled(kind, "int8").header["report"]["memory"]["kv_cache_bytes"] < 0.32 * full["kv_cache_bytes"]


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
@pytest.mark.parametrize("kind", KINDS)
def test_runs_follow_onnxruntime(kind, dtype, decoder, compiled, ort_session):
    """Float pasts in, float presents out: the logits within the stated tolerance of
    onnxruntime's; each past (a caller's array, stored on the way in) comes back within
    the storage's rounding: half a scale per element for int8, fp16's for fp16."""
    path = decoder(kind)
    sess, ref = Session(compiled(kind, dtype)), ort_session(path)
    names = [o.name for o in ref.get_outputs()]
    for seq, past in POINTS:
        feeds = decoder_feeds(path, 1, seq, past, seed=3)
        got = dict(zip(names, sess.run(names, feeds)))
        want = dict(zip(names, ref.run(None, feeds)))
        g, w = got["logits"].astype(np.float64), want["logits"].astype(np.float64)
        err = np.abs(g - w).max() / w.std()
        assert err < TOLERANCE[dtype], f"{kind} {dtype} at {(seq, past)}: logits off by {err:.2e} of their std"
        for name in names[1:]:
            p = feeds[name.replace("present.", "past_key_values.")]
            back = got[name][:, :, :past]
            assert got[name].dtype == np.float32 and got[name].shape == want[name].shape
            if dtype == "int8":
                half = np.abs(p).max(-1, keepdims=True) / 254
                assert np.all(np.abs(back - p) <= half * (1 + 1e-6)) and (past == 0 or not np.array_equal(back, p)), name
            else:
                np.testing.assert_array_equal(back, p.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_tokens_equal_fp32(kind, compiled):
    prompt = np.random.default_rng(0).integers(0, 200, (1, 16))
    want = Generator(compiled(kind)).generate(prompt, 32)
    for dtype in ("fp16", "int8"):
        gen = Generator(compiled(kind, dtype))
        assert gen.session.held_pasts == {k.past for k in gen.spec.kv}  # every cache carried as held
        np.testing.assert_array_equal(gen.generate(prompt, 32), want, err_msg=dtype)


class _ReadingPresents(Session):
    """A session whose generator reads each present and feeds it back as a caller's past."""

    held_pasts = frozenset()


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_the_sliding_window_moves_the_held_cache(dtype, decoder, compiled):
    """window=True drops the oldest positions of a compressed cache in its buffer
    (`Session.held_past(name, drop=n)`): the same tokens as reading every present back
    and feeding its last positions, the float way."""
    small = "sequence_length:1~8;past_sequence_length:0~15;batch_size:1~1"
    exe = compiled("llama", dtype, small)
    prompt = np.random.default_rng(1).integers(0, 256, (1, 6))
    gen = Generator(exe)
    assert gen.session.held_pasts
    held = gen.generate(prompt, 40, window=True)
    read = Generator(_ReadingPresents(exe)).generate(prompt, 40, window=True)
    assert held.shape == (1, 46)
    np.testing.assert_array_equal(held, read)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    return export_decoder("llama-medium", tmp_path_factory.mktemp("kv_compressed_medium"))


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_decode_steps_stay_in_place(dtype, medium):
    """Each decode step feeds the held past (no memory of its own), writes the new positions
    into buffers that never move and reads no present; after the first decode step (which
    sizes the one-row GEMV buffers) a step allocates under 5% of the compressed cache (one
    layer's K widened whole would be 47% of the int8 cache).  A present read afterwards is
    the cache read back."""
    exe = compile_model(medium, dim_range="sequence_length:1~64;past_sequence_length:0~127;batch_size:1~1",
                        kv_cache_dtype=dtype)
    gen = Generator(exe)
    sess = gen.session
    kv_bytes = sum(b.nbytes for b in sess.kv_buffers.values())
    assert kv_bytes == exe.header["report"]["memory"]["kv_cache_bytes"]
    addrs = {i: b.__array_interface__["data"][0] for i, b in sess.kv_buffers.items()}

    def held_fed(output_names, feeds):  # (every past is the held past, the outputs asked for)
        pasts = {k: v for k, v in feeds.items() if k.startswith("past_key_values")}
        return all(np.shares_memory(v, sess.held_past(k)) for k, v in pasts.items()), output_names

    prompt = np.random.default_rng(0).integers(0, 8192, (1, 32))
    out, peaks, seen = generate_traced(gen, prompt, 24, held_fed)
    held, names = [h for h, _ in seen], [n for _, n in seen]
    assert out.shape == (1, 56)
    assert {i: b.__array_interface__["data"][0] for i, b in sess.kv_buffers.items()} == addrs
    assert all(held[1:]) and all(n == ["logits"] for n in names)
    decode = peaks[2:]  # the first run is the prompt, the second sizes the decode buffers
    print(f"{dtype}: decode step peak {max(decode)} bytes, KV cache {kv_bytes} bytes")
    assert max(decode) <= 0.05 * kv_bytes, f"a decode step peaked at {max(decode)} bytes (cache {kv_bytes})"
    # one more step that reads a present: the stored cache read back, in the model's dtype
    feeds = decoder_feeds(medium, 1, 1, 55, seed=1)
    feeds.update({k: sess.held_past(k) for k in sess.held_pasts})
    present = sess.run(["present.0.key"], feeds)[0]
    assert present.dtype == np.float32 and present.shape == (1, 4, 56, 64) and np.abs(present).max() > 0
