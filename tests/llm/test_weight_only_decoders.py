"""Decoders compiled with weight-only INT8/INT4 (``--quant_type``, issue 16) against
onnxruntime's float model."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_model
from runtime import Session

DIMS = "sequence_length:1~16;past_sequence_length:0~31;batch_size:1~1"


@pytest.mark.parametrize("quant_type,bytes_ratio,tol", [("W8A16", 0.27, 0.02), ("W4A16", 0.15, 0.25)])
def test_decoder_weight_only_matches_onnxruntime(decoder, ort_session, quant_type, bytes_ratio, tol):
    """Every projection of the tiny LLaMA becomes quant.matmul_nbits; the quantized
    matrices take at most 0.27x (8 bits) / 0.15x (4 bits, g128) of their float32 bytes;
    logits stay close to onnxruntime's float ones (relative to their range)."""
    from tests.llm.decoders import decoder_feeds

    path = decoder("llama")
    exe = compile_model(path, dim_range=DIMS, quant_type=quant_type)
    steps = [s["kernel"] for s in exe.program["steps"]]
    assert steps.count("quant.matmul_nbits") == 2 * 4 + 1  # per layer qkv, o, gate+up, down; the LM head

    nbits = [s for s in exe.program["steps"] if s["kernel"] == "quant.matmul_nbits"]
    qbytes = sum(exe.weights[r[1]].nbytes for s in nbits for r in s["inputs"][1:] if r and r[0] == "w")
    fbytes = sum(int(s["attrs"]["k"]) * int(s["attrs"]["n"]) * 4 for s in nbits)
    assert qbytes <= bytes_ratio * fbytes, (qbytes, fbytes)
    sess, ref = Session(exe), ort_session(path)
    for seq, past in [(8, 0), (1, 8)]:
        feeds = decoder_feeds(path, 1, seq, past, 1)
        got, want = sess.run(None, feeds)[0], ref.run(None, feeds)[0]
        assert np.abs(got - want).max() <= tol * np.abs(want).max()
