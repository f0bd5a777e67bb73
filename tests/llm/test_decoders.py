"""The three tiny optimum decoders export, run in onnxruntime at prefill and decode
points with the shapes their dim_params promise, and match the torch model."""

from __future__ import annotations

import numpy as np
import pytest

from tests.llm.decoders import KINDS, decoder_feeds, expected_output_shapes, greedy_decode, load_torch_decoder

# (sequence_length, past_sequence_length)
POINTS = [(8, 0), (1, 8), (1, 63), (64, 0)]


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_io(kind, decoder):
    import onnx

    proto = onnx.load(decoder(kind))
    ins = {v.name for v in proto.graph.input}
    outs = [v.name for v in proto.graph.output]
    assert {"input_ids", "attention_mask", "position_ids"} <= ins
    assert not any(n.op_type in ("If", "Loop") for n in proto.graph.node)  # not the merged decoder
    layers = sum(1 for n in ins if n.endswith(".key"))
    assert layers == 2
    assert outs == ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    assert {f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")} <= ins


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seq,past", POINTS)
def test_decoder_runs_in_ort(kind, seq, past, decoder, ort_session):
    path = decoder(kind)
    feeds = decoder_feeds(path, batch=2, seq=seq, past=past, seed=1)
    sess = ort_session(path)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    want = expected_output_shapes(path, batch=2, seq=seq, past=past)
    assert {k: v.shape for k, v in got.items()} == want
    assert all(np.isfinite(v).all() for v in got.values())
    # present = concat(past, new) along the sequence axis
    for name, v in feeds.items():
        if name.startswith("past_key_values."):
            np.testing.assert_array_equal(got[name.replace("past_key_values.", "present.")][:, :, :past], v)


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_matches_torch(kind, decoder, ort_session):
    """Prefill (8, 0) logits equal the torch model's; one decode step (1, 8) fed with
    ORT's own presents equals torch's logits for the 9th token."""
    import torch

    path = decoder(kind)
    model = load_torch_decoder(path)
    sess = ort_session(path)
    names = [o.name for o in sess.get_outputs()]

    feeds = decoder_feeds(path, batch=2, seq=8, past=0, seed=3)
    got = dict(zip(names, sess.run(None, feeds)))
    ids = torch.from_numpy(feeds["input_ids"])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=torch.from_numpy(feeds["attention_mask"]),
                     position_ids=torch.from_numpy(feeds["position_ids"]), use_cache=False).logits.numpy()
    np.testing.assert_allclose(got["logits"], want, atol=1e-4, rtol=0)

    step = decoder_feeds(path, batch=2, seq=1, past=8, seed=4)
    for name in step:
        if name.startswith("past_key_values."):
            step[name] = got[name.replace("past_key_values.", "present.")]
    got2 = dict(zip(names, sess.run(None, step)))
    ids9 = torch.cat([ids, torch.from_numpy(step["input_ids"])], dim=1)
    with torch.no_grad():
        want9 = model(input_ids=ids9, attention_mask=torch.ones_like(ids9), use_cache=False).logits.numpy()
    np.testing.assert_allclose(got2["logits"][:, 0], want9[:, -1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_decode_matches_generate(kind, decoder, ort_session):
    """A KV-cache greedy loop in onnxruntime yields transformers' generate tokens."""
    import torch

    path = decoder(kind)
    model = load_torch_decoder(path)
    sess = ort_session(path)
    names = [o.name for o in sess.get_outputs()]
    prompt = decoder_feeds(path, batch=2, seq=5, past=0, seed=7)["input_ids"]
    new = 12
    got = greedy_decode(lambda f: dict(zip(names, sess.run(None, f))), path, prompt, new)
    with torch.no_grad():
        want = model.generate(torch.from_numpy(prompt), attention_mask=torch.ones_like(torch.from_numpy(prompt)),
                              do_sample=False, max_new_tokens=new, min_new_tokens=new,
                              pad_token_id=0).numpy()
    np.testing.assert_array_equal(got, want)
