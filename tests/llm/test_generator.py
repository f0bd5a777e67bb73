"""`runtime.Generator` and ``atcpy-run --prompt_ids`` on the optimum decoders (issue 15).

Each tiny decoder compiles once with ``--dim_range`` (room for a 16-token prompt and
64 new tokens) and `Generator.generate` must give exactly transformers'
``generate(do_sample=False)`` tokens: 64 in fp32, 32 in force_fp16; so does the
4-layer hidden-512 ``llama-medium`` (64-token prompt, 64 new; export 2-5 s).  Then the
errors, the sliding window, seeded sampling, eos, streamers, and the command line
with token ids and with a tokenizer trained here (nothing is downloaded).
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler import compile_model
from runtime import Generator
from runtime.cli import main as run_main
from runtime.errors import InputError
from runtime.generator import GenerationStats, UnsupportedDecoderError, sample
from tests.llm.decoders import KINDS, VOCAB, export_decoder, load_torch_decoder

DIMS = "sequence_length:1~80;past_sequence_length:0~79;batch_size:1~1"
MAX_LEN = 80  # past_sequence_length's bound + the new token
PROMPT = 16


def _prompt(seed: int = 0, n: int = PROMPT, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(2, vocab, (1, n)).astype(np.int64)


@pytest.fixture(scope="module")
def om(decoder, tmp_path_factory):
    """``om(kind, mode="force_fp32") -> (Executable, .om path)``, compiled once."""
    cache: dict = {}

    def get(kind: str, mode: str = "force_fp32"):
        if (kind, mode) not in cache:
            exe = compile_model(decoder(kind), dim_range=DIMS, precision_mode=mode)
            path = exe.save(tmp_path_factory.mktemp("om") / f"{kind}-{mode}.om")
            cache[kind, mode] = (exe, path)
        return cache[kind, mode]

    return get


@pytest.fixture(scope="module")
def reference(decoder):
    """``reference(kind, prompt, n)``: transformers' greedy ``generate`` tokens, never stopping at eos."""
    import torch

    models: dict = {}

    def get(kind: str, prompt: np.ndarray, n: int, path=None, eos=None, mask=None) -> np.ndarray:
        path = path or decoder(kind)
        if path not in models:
            models[path] = load_torch_decoder(path)
        m = models[path]
        m.generation_config.eos_token_id = eos
        mask = np.ones_like(prompt) if mask is None else mask
        with torch.no_grad():
            out = m.generate(torch.from_numpy(prompt), attention_mask=torch.from_numpy(mask),
                             max_new_tokens=n, do_sample=False, pad_token_id=0)
        return out.numpy()

    return get


# -- exactness ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_greedy_64_tokens_equal_transformers(kind, om, reference):
    gen = Generator(om(kind)[0])
    prompt = _prompt()
    got = gen.generate(prompt, 64)
    want = reference(kind, prompt, 64)
    assert got.shape == want.shape == (1, PROMPT + 64) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    st = gen.stats
    assert isinstance(st, GenerationStats)
    assert (st.batch, st.prompt_tokens, st.new_tokens, st.prefill_runs) == (1, PROMPT, 64, 1)
    assert len(st.step_ms) == 63 and all(t > 0 for t in st.step_ms)
    assert st.first_token_ms > 0 and st.decode_tokens_per_s > 0
    assert st.decode_ms == pytest.approx(sum(st.step_ms))
    assert gen.max_len == MAX_LEN


@pytest.mark.parametrize("kind", KINDS)
def test_force_fp16_32_tokens_equal_transformers(kind, om, reference):
    gen = Generator(om(kind, "force_fp16")[0])
    prompt = _prompt(1)
    np.testing.assert_array_equal(gen.generate(prompt, 32), reference(kind, prompt, 32))


def test_llama_medium_64_tokens_equal_transformers(tmp_path_factory, reference):
    path = export_decoder("llama-medium", tmp_path_factory.mktemp("medium"))
    exe = compile_model(path, dim_range="sequence_length:1~128;past_sequence_length:0~127;batch_size:1~1")
    prompt = _prompt(0, 64, 8192)
    got = Generator(exe).generate(prompt, 64)
    want = reference("llama-medium", prompt, 64, path=path)
    np.testing.assert_array_equal(got, want)
    fp16 = compile_model(path, dim_range="sequence_length:1~128;past_sequence_length:0~127;batch_size:1~1",
                         precision_mode="force_fp16")
    np.testing.assert_array_equal(Generator(fp16).generate(prompt, 32), want[:, :64 + 32])


def test_the_same_generator_the_same_tokens_twice_and_eos_stops_like_transformers(om, reference):
    gen = Generator(om("llama")[0])
    prompt = _prompt(2)
    first = gen.generate(prompt, 12)
    np.testing.assert_array_equal(gen.generate(prompt, 12), first)
    eos = int(first[0, PROMPT + 5])  # the 6th new token
    got = gen.generate(prompt, 12, eos_token_id=eos)
    want = reference("llama", prompt, 12, eos=eos)
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] <= PROMPT + 6 and got[0, -1] == eos
    assert gen.stats.new_tokens == got.shape[1] - PROMPT


def test_left_padded_batch_equals_transformers(decoder, reference):
    exe = compile_model(decoder("llama"), dim_range=DIMS.replace("batch_size:1~1", "batch_size:1~2"))
    ids = np.random.default_rng(7).integers(2, VOCAB, (2, 10)).astype(np.int64)
    mask = np.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0  # row 1 is a 7-token prompt, padded on the left
    got = Generator(exe).generate(ids, 20, attention_mask=mask)
    np.testing.assert_array_equal(got, reference("llama", ids, 20, mask=mask))


# -- length bound and the sliding window ---------------------------------------------------------

def test_past_the_bound_is_a_clear_error_before_anything_runs(om):
    gen = Generator(om("llama")[0])
    calls = []
    run = gen.session.run
    gen.session.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    with pytest.raises(InputError, match=r"needs 81 positions.*at most 80.*past_sequence_length 0~79.*window=True"):
        gen.generate(_prompt(), MAX_LEN - PROMPT + 2)
    assert not calls
    # the last new token is never fed back: prompt + new - 1 positions fit exactly
    assert gen.generate(_prompt(), MAX_LEN - PROMPT + 1).shape == (1, MAX_LEN + 1)


def test_sliding_window_keeps_the_last_positions_and_goes_on(om):
    gen = Generator(om("llama")[0])
    prompt = _prompt(3)
    plain = gen.generate(prompt, MAX_LEN - PROMPT + 1)
    seen = []
    run = gen.session.run

    def spy(names, feeds, **kw):
        seen.append((feeds["past_key_values.0.key"].shape[2], feeds["attention_mask"].shape[1],
                     int(feeds["position_ids"][0, -1])))
        return run(names, feeds, **kw)

    gen.session.run = spy
    n = 100
    out = gen.generate(prompt, n, window=True)
    assert out.shape == (1, PROMPT + n)
    # identical until the window first slides, then still going
    np.testing.assert_array_equal(out[:, :plain.shape[1]], plain)
    assert max(p for p, _, _ in seen) == MAX_LEN - 1
    assert all(m == p + (PROMPT if i == 0 else 1) for i, (p, m, _) in enumerate(seen))
    assert [pos for _, _, pos in seen] == list(range(PROMPT - 1, PROMPT + n - 1))  # positions keep increasing
    assert ((out >= 0) & (out < VOCAB)).all()


# -- sampling ---------------------------------------------------------------------------------

def test_seeded_sampling_is_reproducible_and_degenerates_to_greedy(om):
    gen = Generator(om("qwen2")[0])
    prompt = _prompt(4)
    a = gen.generate(prompt, 20, do_sample=True, temperature=0.9, top_k=50, top_p=0.95, seed=7)
    b = gen.generate(prompt, 20, do_sample=True, temperature=0.9, top_k=50, top_p=0.95, seed=7)
    c = gen.generate(prompt, 20, do_sample=True, temperature=0.9, top_k=50, top_p=0.95, seed=8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    greedy = gen.generate(prompt, 20)
    np.testing.assert_array_equal(gen.generate(prompt, 20, do_sample=True, top_k=1, seed=0), greedy)
    np.testing.assert_array_equal(gen.generate(prompt, 20, do_sample=True, top_p=1e-9, seed=0), greedy)


def test_sample_respects_top_k_and_top_p():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]], np.float32))
    draws = np.array([sample(logits, rng, top_k=2)[0] for _ in range(400)])
    assert set(draws) == {0, 1}
    draws = np.array([sample(logits, rng, top_p=0.8)[0] for _ in range(400)])  # 0.5+0.2 < 0.8 <= 0.85
    assert set(draws) == {0, 1, 2}
    draws = np.array([sample(logits, rng)[0] for _ in range(4000)])
    assert abs(np.mean(draws == 0) - 0.5) < 0.04


def test_argument_errors(om):
    gen = Generator(om("gpt2")[0])
    with pytest.raises(InputError, match="token ids in"):
        gen.generate(np.array([[1, VOCAB]]), 2)
    with pytest.raises(InputError, match="batch 2"):
        gen.generate(np.ones((2, 4), np.int64), 2)
    with pytest.raises(InputError, match="integers"):
        gen.generate(np.ones((1, 4), np.float32), 2)
    with pytest.raises(InputError, match="temperature"):
        gen.generate(_prompt(), 2, do_sample=True, temperature=0)
    with pytest.raises(InputError, match="max_new_tokens"):
        gen.generate(_prompt(), -1)


# -- streamers ----------------------------------------------------------------------------------

def test_streamers_get_each_token_as_produced(om):
    gen = Generator(om("gpt2")[0])
    prompt = _prompt(5)
    got = []
    out = gen.generate(prompt, 6, streamer=lambda t: got.append(t.copy()))
    assert [t.shape for t in got] == [(1,)] * 6
    np.testing.assert_array_equal(np.concatenate(got), out[0, PROMPT:])

    class Streamer:  # transformers' protocol: the prompt first, then each token, then end()
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, v):
            self.puts.append(np.asarray(v))

        def end(self):
            self.ended = True

    s = Streamer()
    gen.generate(prompt, 6, streamer=s)
    np.testing.assert_array_equal(s.puts[0], prompt)
    np.testing.assert_array_equal(np.concatenate(s.puts[1:]), out[0, PROMPT:])
    assert s.ended


# -- not a decoder ------------------------------------------------------------------------------

def _relu_om(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, tmp_path / "relu.onnx")
    return compile_model(str(tmp_path / "relu.onnx")).save(tmp_path / "relu.om")


def test_not_a_decoder_is_unsupported(tmp_path):
    with pytest.raises(UnsupportedDecoderError, match="input_ids"):
        Generator(_relu_om(tmp_path))


# -- atcpy-run ----------------------------------------------------------------------------------

def _run(argv, capsys):
    code = run_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prompt_ids(om, tmp_path, capsys):
    exe, path = om("llama")
    prompt = _prompt(6)
    np.save(tmp_path / "ids.npy", prompt[0])
    code, out, err = _run([f"--model={path}", f"--prompt_ids={tmp_path / 'ids.npy'}", "--max_new_tokens=8",
                           f"--output={tmp_path / 'out'}"], capsys)
    assert code == 0, err
    ids = np.load(tmp_path / "out" / "output_ids.npy")
    np.testing.assert_array_equal(ids, Generator(exe).generate(prompt, 8))
    assert " ".join(map(str, ids[0])) in out
    assert "prompt eval time =" in out and f"/ {PROMPT:5d} tokens" in out
    assert "eval time =" in out and "/     7 runs" in out and "tokens per second" in out
    # sampling flags pass through, seeded
    code, out2, _ = _run([f"--model={path}", f"--prompt_ids={tmp_path / 'ids.npy'}", "--max_new_tokens=8",
                          "--do_sample", "--top_k=5", "--seed=3", "--temperature=0.7"], capsys)
    code3, out3, _ = _run([f"--model={path}", f"--prompt_ids={tmp_path / 'ids.npy'}", "--max_new_tokens=8",
                           "--do_sample", "--top_k=5", "--seed=3", "--temperature=0.7"], capsys)
    assert code == code3 == 0 and out2.splitlines()[0] == out3.splitlines()[0]


def test_cli_tokenizer_text_in_and_out(om, tmp_path, capsys):
    import tokenizers
    from tokenizers import models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    exe, path = om("qwen2")
    text = "w5 w17 w200 w33 w9"
    code, out, err = _run([f"--model={path}", f"--tokenizer={tmp_path / 'tokenizer.json'}", f"--prompt={text}",
                           "--max_new_tokens=6", f"--output={tmp_path / 'out'}"], capsys)
    assert code == 0, err
    ids = np.load(tmp_path / "out" / "output_ids.npy")
    np.testing.assert_array_equal(ids, Generator(exe).generate(np.array([[5, 17, 200, 33, 9]]), 6))
    words = " ".join(f"w{i}" for i in ids[0])
    assert out.splitlines()[0] == words
    assert (tmp_path / "out" / "output.txt").read_text().strip() == words
    # token ids in, text out
    np.save(tmp_path / "ids.npy", np.array([5, 17, 200, 33, 9]))
    code, out, _ = _run([f"--model={path}", f"--tokenizer={tmp_path / 'tokenizer.json'}",
                         f"--prompt_ids={tmp_path / 'ids.npy'}", "--max_new_tokens=6"], capsys)
    assert code == 0 and out.splitlines()[0] == words


def test_cli_errors_and_exit_codes(om, tmp_path, capsys, monkeypatch):
    _, path = om("gpt2")
    np.save(tmp_path / "ids.npy", _prompt()[0])
    np.save(tmp_path / "f.npy", np.ones(4, np.float32))
    ids = f"--prompt_ids={tmp_path / 'ids.npy'}"
    cases = [
        ([f"--model={path}", f"--prompt_ids={tmp_path / 'none.npy'}"], 2, "no such file"),
        ([f"--model={path}", "--prompt=hello"], 2, "--prompt needs --tokenizer"),
        ([f"--model={path}", ids, "--input=x.npy"], 2, "different modes"),
        ([f"--model={path}", ids, "--max_new_tokens=70"], 5, "needs 85 positions"),
        ([f"--model={path}", f"--prompt_ids={tmp_path / 'f.npy'}"], 5, "integer array"),
        ([f"--model={_relu_om(tmp_path)}", ids], 3, "unsupported model"),
        ([f"--model={tmp_path / 'ids.npy'}", ids], 4, "invalid .om"),
    ]
    for argv, code, msg in cases:
        got, _, err = _run(argv, capsys)
        assert got == code and msg in err and "Traceback" not in err, (argv, got, err)
        assert len(err.strip().splitlines()) == 1
    (tmp_path / "tokenizer.json").write_text("{}")
    got, _, err = _run([f"--model={path}", f"--tokenizer={tmp_path / 'tokenizer.json'}", "--prompt=w1"], capsys)
    assert got == 5 and "not a tokenizer.json" in err
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed
    got, _, err = _run([f"--model={path}", f"--tokenizer={tmp_path / 'tokenizer.json'}", "--prompt=w1"], capsys)
    assert got == 2 and "'tokenizers' package" in err
