"""One `Session` shared by threads: each run takes a state of its own (arena,
scratch, views, planned thunks), so concurrent runs give the single-threaded
outputs bit for bit, and nothing in the shared program changes while they run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler import compile_model
from runtime.session import Session
from tests.threads import expected, hammer, share_one_state

ROOT = Path(__file__).resolve().parents[2]
THREADS, RUNS = 8, 100


@pytest.fixture(scope="module")
def tiny_cnn() -> Session:
    path = ROOT / "examples" / "tiny_cnn.onnx"
    if not path.exists():
        subprocess.run([sys.executable, str(ROOT / "examples" / "make_example.py")], check=True, cwd=ROOT)
    return Session(compile_model(str(path)))


def _feeds(sess: Session, seed: int, n: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    (i,) = sess.get_inputs()
    return [{i.name: rng.standard_normal(i.shape).astype(np.float32)} for _ in range(n)]


def test_eight_threads_share_one_session_bit_exactly(tiny_cnn):
    per_thread = [_feeds(tiny_cnn, t) for t in range(THREADS)]
    want = [expected(tiny_cnn, f) for f in per_thread]
    assert hammer(lambda f: tiny_cnn.run(None, f), per_thread, want, RUNS) == 0
    assert 1 <= len(tiny_cnn._pool) <= THREADS
    # later single-threaded runs keep to one state (the pool is LIFO)
    again = expected(tiny_cnn, per_thread[0])
    assert all(np.array_equal(g, w) for a, b in zip(again, want[0]) for g, w in zip(a, b))


def test_copy_false_outputs_belong_to_their_state(tiny_cnn):
    f0, f1 = _feeds(tiny_cnn, 99, 2)
    w0, w1 = expected(tiny_cnn, [f0, f1])
    with tiny_cnn.hold() as a, tiny_cnn.hold() as b:
        (y0,) = a.run(None, f0, copy=False)
        (y1,) = b.run(None, f1, copy=False)
        tiny_cnn.run(None, f1)  # a third state: neither held one is touched
        assert not np.shares_memory(y0, y1)
        np.testing.assert_array_equal(y0, w0[0])
        np.testing.assert_array_equal(y1, w1[0])


def test_states_share_no_memory_and_runs_write_nothing_shared(tiny_cnn):
    """The property the threads rely on; it fails if two runs could get one state."""
    before = [(t.kernel, sorted(t.attrs)) for t in tiny_cnn._templates]
    with tiny_cnn.hold() as a, tiny_cnn.hold() as b:
        sa, sb = a.state, b.state
        assert sa is not sb and not np.shares_memory(sa.arena, sb.arena) and sa.scratch is not sb.scratch
        a.run(None, _feeds(tiny_cnn, 1, 1)[0])
        b.run(None, _feeds(tiny_cnn, 2, 1)[0])
        for x, y in zip(sa.steps, sb.steps):
            assert x.attrs is not y.attrs
            assert x.attrs.get("_scratch", sa.scratch) is sa.scratch
            assert y.attrs.get("_scratch", sb.scratch) is sb.scratch
            for o, p in zip(x.outs, y.outs):
                assert o is None or not np.shares_memory(o, p)
    assert [(t.kernel, sorted(t.attrs)) for t in tiny_cnn._templates] == before
    assert all(t.thunk is None and not t.outs for t in tiny_cnn._templates)


def test_profiles_of_concurrent_runs_add_up(tiny_cnn):
    sess = Session(tiny_cnn.executable)
    per_thread = [_feeds(sess, t, 1) for t in range(4)]
    want = [expected(sess, f) for f in per_thread]
    assert hammer(lambda f: sess.run(None, f, profile=True), per_thread, want, 10) == 0
    assert sess.profile.runs == 40 and len(sess.profile.steps) == 40 * len(sess._steps)


def test_one_shared_state_goes_wrong(tiny_cnn, monkeypatch):
    """The same workload with every run forced into one state gives wrong outputs:
    the test above does see sharing."""
    sess = Session(tiny_cnn.executable)
    share_one_state(sess, monkeypatch)
    per_thread = [_feeds(sess, t) for t in range(THREADS)]
    want = [expected(sess, f) for f in per_thread]
    assert hammer(lambda f: sess.run(None, f), per_thread, want, RUNS) > 0
