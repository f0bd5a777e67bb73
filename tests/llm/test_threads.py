"""A decoder `Session` shared by threads: symbolic shapes bound per run, planned
steps and KV caches, each in the run's own state.  Outputs and generated tokens
are bit-equal to single-threaded ones."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from compiler import compile_model
from runtime import Generator, Session
from tests.llm.decoders import decoder_feeds
from tests.threads import expected, hammer, share_one_state

DIMS = "sequence_length:1~64;past_sequence_length:0~63;batch_size:1~2"
THREADS, RUNS = 8, 100


@pytest.fixture(scope="module")
def llama(decoder):
    path = decoder("llama")
    return path, compile_model(path, dim_range=DIMS)


def _per_thread(path) -> list[list[dict[str, np.ndarray]]]:
    """Per thread two points of different shapes: every run re-binds its state's views."""
    return [[decoder_feeds(path, 1 + t % 2, 1, 3 + t, seed=t), decoder_feeds(path, 2 - t % 2, 4 + t, t, seed=50 + t)]
            for t in range(THREADS)]


def test_eight_threads_share_one_decoder_session_bit_exactly(llama):
    path, exe = llama
    sess = Session(exe)
    assert any(st.plan is not None for st in sess._steps) and sess._host_templates
    per_thread = _per_thread(path)
    want = [expected(sess, f) for f in per_thread]
    assert hammer(lambda f: sess.run(None, f), per_thread, want, RUNS) == 0


def test_one_shared_state_goes_wrong(llama, monkeypatch):
    path, exe = llama
    sess = Session(exe)
    share_one_state(sess, monkeypatch)
    per_thread = _per_thread(path)
    want = [expected(sess, f) for f in per_thread]
    assert _wrong_or_error(sess, per_thread, want) > 0


def _wrong_or_error(sess, per_thread, want) -> int:
    """Wrong runs; a run that fails outright (views rebound under it) counts as wrong too."""
    try:
        return hammer(lambda f: sess.run(None, f), per_thread, want, RUNS)
    except Exception:  # noqa: BLE001 - a failed run is a wrong run
        return 1


def test_generators_on_one_session_in_threads(llama):
    """Each Generator holds a state for its generation: the KV caches are not shared."""
    _, exe = llama
    sess = Session(exe)
    prompts = [np.random.default_rng(t).integers(0, 256, (1, 5 + t)) for t in range(4)]
    want = [Generator(sess).generate(p, 12) for p in prompts]
    got: list = [None] * len(prompts)

    def work(t: int) -> None:
        gen = Generator(sess)
        for _ in range(3):
            got[t] = gen.generate(prompts[t], 12)
            if not np.array_equal(got[t], want[t]):
                return

    threads = [threading.Thread(target=work, args=(t,)) for t in range(len(prompts))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
