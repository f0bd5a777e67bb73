"""The placer on hand-made buffer sets: greedy orders, the local search, the lower bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from passes.assign_buffers import ORDERS, Buffer, lower_bound, place, plan


def buffers(spec: list[tuple[int, int, int]]) -> list[Buffer]:
    return [Buffer(size, start, end) for size, start, end in spec]


def check_no_overlap(bufs: list[Buffer]) -> None:
    for i, a in enumerate(bufs):
        for b in bufs[i + 1 :]:
            if a.overlaps_in_time(b):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)


def test_greedy_by_size_reuses_dead_bytes() -> None:
    bufs = buffers([(64, 0, 1), (32, 1, 2), (64, 2, 3)])
    assert place(sorted(bufs, key=ORDERS["size"])) == 96
    assert [b.offset for b in bufs] == [0, 64, 0]


def test_local_search_reaches_the_lower_bound_where_greedy_does_not() -> None:
    # found by random search: every greedy order ends 64 bytes above the bound
    spec = [(96, 4, 5), (96, 5, 6), (128, 6, 9), (64, 5, 8), (96, 2, 4)]
    greedy, searched = buffers(spec), buffers(spec)
    assert lower_bound(greedy) == 288
    assert plan(greedy, search=0) == 352
    assert plan(searched, search=200) == 288
    check_no_overlap(searched)


def test_plan_is_deterministic() -> None:
    spec = [(96, 2, 5), (128, 4, 7), (64, 2, 4), (32, 6, 8), (96, 0, 1), (128, 6, 6), (96, 1, 2)]
    a, b = buffers(spec), buffers(spec)
    assert plan(a) == plan(b)
    assert [x.offset for x in a] == [x.offset for x in b]


SPECS = st.lists(
    st.tuples(st.integers(0, 8).map(lambda k: 32 * k), st.integers(0, 20), st.integers(0, 6)).map(
        lambda t: (t[0], t[1], t[1] + t[2])
    ),
    max_size=30,
)


@settings(max_examples=50, deadline=None)
@given(SPECS, st.sampled_from([0, 20, 200]))
def test_plan_is_valid_and_between_the_bounds(spec: list[tuple[int, int, int]], search: int) -> None:
    bufs = buffers(spec)
    arena = plan(bufs, search)
    check_no_overlap(bufs)
    assert lower_bound(bufs) <= arena <= sum(b.size for b in bufs)
    assert arena == max((b.offset + b.size for b in bufs), default=0)
    assert arena <= plan(buffers(spec), 0)  # searching never makes it worse
