"""Nothing proportional to the KV cache is allocated or copied per decode step
(issue 15): the Generator feeds each step's present (a view of the cache the
executable owns) back as the next past, the cache buffers never move, and a
decode step's transient allocations stay under 5% of the cache."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_model
from runtime import Generator
from tests.llm.decoders import export_decoder, generate_traced


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    path = export_decoder("llama-medium", tmp_path_factory.mktemp("kv_medium"))
    return compile_model(path, dim_range="sequence_length:1~64;past_sequence_length:0~127;batch_size:1~1")


def test_decode_steps_write_the_cache_in_place(medium):
    gen = Generator(medium)
    sess = gen.session
    assert len(sess.kv_buffers) == 8  # K and V of 4 layers
    kv_bytes = sum(b.nbytes for b in sess.kv_buffers.values())
    addrs = {i: b.__array_interface__["data"][0] for i, b in sess.kv_buffers.items()}

    def cache_fed(names, feeds):  # every past is a view of a cache buffer, not a copy
        pasts = [v for k, v in feeds.items() if k.startswith("past_key_values")]
        return all(any(np.shares_memory(p, b) for b in sess.kv_buffers.values()) for p in pasts)

    prompt = np.random.default_rng(0).integers(0, 8192, (1, 32))
    out, peaks, shared = generate_traced(gen, prompt, 24, cache_fed)
    assert out.shape == (1, 56)
    assert {i: b.__array_interface__["data"][0] for i, b in sess.kv_buffers.items()} == addrs
    decode = peaks[1:]  # the first run is the prompt
    assert all(shared[1:])  # every decode step's past is the cache itself, not a copy
    print(f"decode step peak {max(decode)} bytes, KV cache {kv_bytes} bytes")
    assert max(decode) <= 0.05 * kv_bytes, f"a decode step peaked at {max(decode)} bytes (cache {kv_bytes})"
