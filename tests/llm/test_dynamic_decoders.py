"""One `.om` per decoder runs every (sequence, past) point in range (issue 14).

Each of the three optimum decoders compiles once with
``--dim_range="sequence_length:1~64;past_sequence_length:0~63;batch_size:1~2"``
in fp32, force_fp16 and INT8, and the one executable matches onnxruntime at the
prompt (8, 0), decode (1, 8) and (1, 63), and the longest prompt (64, 0).  The
shape arithmetic of the exports runs on the host (no AICPU step), every
intermediate has a slot planned at the bounds, and a decode run allocates
(almost) nothing.
"""

from __future__ import annotations

import sys
import tracemalloc

import numpy as np
import pytest

from compiler import compile_model
from runtime import Session
from runtime.errors import InputError
from tests.llm.decoders import KINDS, decoder_feeds

DIMS = "sequence_length:1~64;past_sequence_length:0~63;batch_size:1~2"
POINTS = [(8, 0), (1, 8), (1, 63), (64, 0)]


@pytest.fixture(scope="session")
def compiled(decoder, tmp_path_factory):
    cache: dict = {}

    def get(kind: str, mode: str = "force_fp32"):
        key = (kind, mode)
        if key not in cache:
            path = decoder(kind)
            opts = {"dim_range": DIMS, "precision_mode": mode}
            if mode == "allow_quantize":
                samples = [decoder_feeds(path, 1, 8, 4, seed) for seed in range(8)]
                calib = tmp_path_factory.mktemp("calib") / f"{kind}.npz"
                np.savez(calib, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
                opts["calibration_data"] = str(calib)
            cache[key] = compile_model(path, **opts)
        return cache[key]

    return get


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_one_om_matches_onnxruntime_at_every_point(kind, decoder, compiled, ort_session):
    path = decoder(kind)
    sess, ref = Session(compiled(kind)), ort_session(path)
    for seq, past in POINTS + [(3, 5)]:
        batch = 2 if (seq, past) == (3, 5) else 1
        feeds = decoder_feeds(path, batch, seq, past, 0)
        for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=f"{kind} at {(seq, past)}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["force_fp16", "allow_quantize"])
def test_fp16_and_int8_follow_onnxruntime(kind, mode, decoder, compiled, ort_session):
    path = decoder(kind)
    exe = compiled(kind, mode)
    steps = exe.program["steps"]
    if mode == "force_fp16":
        assert any(s["kernel"] in ("MatMul", "Gemm") and s["attrs"].get("precision") == "fp16" for s in steps)
    else:
        assert sum(s["kernel"] == "quant.matmul" for s in steps) >= 8
    sess, ref = Session(exe), ort_session(path)
    for seq, past in POINTS:
        feeds = decoder_feeds(path, 1, seq, past, 0)
        got, want = sess.run(["logits"], feeds)[0], ref.run(["logits"], feeds)[0]
        cos = float(got.ravel() @ want.ravel() / np.linalg.norm(got) / np.linalg.norm(want))
        assert cos > (0.9999 if mode == "force_fp16" else 0.995), f"{kind} {mode} at {(seq, past)}: cosine {cos}"


def test_llama_runs_nothing_on_aicpu_and_plans_every_intermediate(compiled):
    exe = compiled("llama")
    report = exe.header["report"]
    assert report["ops"]["by_engine"]["aicpu"] == 0
    assert report["ops"]["by_engine"]["cube"] > 0  # matmuls costed at their bounds go to the Cube
    assert report["ops"]["by_engine"]["host"] > 0  # the shape program
    assert report["dims"] == {"batch_size": [1, 2], "past_sequence_length": [0, 63], "sequence_length": [1, 64]}
    acts = exe.program["activations"]
    inputs = {i["act"] for i in exe.program["inputs"]}
    caches = {e["act"] for e in exe.program["kv_cache"]}  # buffers of their own, outside the arena
    assert len(caches) == 4  # K and V of each of the 2 layers
    assert all(a["offset"] >= 0 for i, a in enumerate(acts) if i not in inputs | caches)


def test_a_decode_run_allocates_under_one_percent_of_the_arena(decoder, compiled):
    exe = compiled("llama")
    arena = exe.header["memory"]["arena_bytes"]
    sess = Session(exe)
    feeds = decoder_feeds(decoder("llama"), 1, 1, 8, 0)
    for _ in range(3):
        sess.run(None, feeds)
    tracemalloc.start()
    try:
        worst = 0
        for _ in range(100):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            outs = sess.run(None, feeds)
            peak = tracemalloc.get_traced_memory()[1]
            worst = max(worst, peak - base - sum(sys.getsizeof(o) for o in outs))  # outputs: header + data
            del outs
    finally:
        tracemalloc.stop()
    assert worst <= 0.01 * arena, f"a run peaked {worst} bytes above its start (arena {arena})"


def test_shapes_outside_the_range_or_inconsistent_are_input_errors(decoder, compiled):
    path = decoder("llama")
    sess = Session(compiled("llama"))
    with pytest.raises(InputError, match=r"sequence_length = 65 is outside .* \(1~64\)"):
        sess.run(None, decoder_feeds(path, 1, 65, 0, 0))
    feeds = decoder_feeds(path, 1, 2, 3, 0)
    feeds["attention_mask"] = np.ones((1, 4), np.int64)  # should be past + sequence = 5
    with pytest.raises(InputError, match="attention_mask"):
        sess.run(None, feeds)


@pytest.mark.parametrize("kind", KINDS)
def test_planned_steps_replan_when_the_shapes_change(kind, decoder, compiled, ort_session):
    """The runtime plans most steps (every MatMul) and, as the shapes change and come
    back, gives the results of a Session that plans nothing and of onnxruntime."""
    path = decoder(kind)
    exe = compiled(kind)
    planned, plain = Session(exe), Session(exe)
    for st in plain._steps:
        st.plan = None
    ort = ort_session(path)
    for seq, past in [(1, 3), (1, 7), (4, 0), (1, 3), (2, 12), (1, 7)]:
        feeds = decoder_feeds(path, 2, seq, past, seed=seq * 100 + past)
        got, want = planned.run(None, feeds), plain.run(None, feeds)
        ref = ort.run(None, feeds)
        for g, w, r in zip(got, want, ref):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    steps = planned._steps
    assert all(st.thunk for st in steps if st.kernel == "MatMul")
    assert sum(bool(st.thunk) for st in steps) >= len(steps) // 2
