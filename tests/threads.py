"""Running one `Session` from many threads at once (`tests/runtime/test_threads.py`,
`tests/llm/test_threads.py`): every thread's outputs must be bit-equal to the
same feeds run alone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from runtime.session import Session

Feeds = dict[str, np.ndarray]


def expected(sess: Session, feeds: Sequence[Feeds]) -> list[list[np.ndarray]]:
    """Single-threaded outputs of each feed dict."""
    return [sess.run(None, f) for f in feeds]


def hammer(run: Callable[[Feeds], list[np.ndarray]], per_thread: Sequence[Sequence[Feeds]],
           want: Sequence[Sequence[list[np.ndarray]]], runs: int) -> int:
    """Each thread ``t`` runs its feeds ``per_thread[t]`` in turn, `runs` times in all,
    all threads starting together; returns how many runs gave outputs that are not
    bit-equal to `want` (thread errors are re-raised)."""
    n = len(per_thread)
    start = threading.Barrier(n)
    wrong = [0] * n
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for k in range(runs):
                j = k % len(per_thread[t])
                got = run(per_thread[t][j])
                if not all(np.array_equal(g, w) for g, w in zip(got, want[t][j], strict=True)):
                    wrong[t] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return sum(wrong)


def share_one_state(sess: Session, monkeypatch: Any) -> None:
    """Make every run use the load-time state (what the Session did before it had a pool)."""
    monkeypatch.setattr(sess, "_take", lambda: sess._default)
