"""The paired significance test bench/int8_accuracy.py prints beside atcpy vs onnxruntime."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.int8_accuracy import mcnemar_p


def _brute(wins: int, losses: int) -> float:
    """Two-sided exact test by enumeration: the probability, under a fair coin per
    discordant pair, of a split no more likely than the observed one."""
    n = wins + losses
    seen = min(wins, losses)
    hits = sum(1 for flips in product((0, 1), repeat=n) if min(sum(flips), n - sum(flips)) <= seen)
    return float(Fraction(hits, 2**n))


def test_known_values() -> None:
    assert mcnemar_p(0, 0) == 1.0  # no discordant pairs: no evidence either way
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(0, 5) == 2 / 32
    assert mcnemar_p(2, 4) == 2 * (1 + 6 + 15) / 64
    assert mcnemar_p(10, 0) < 0.002


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 8), st.integers(0, 8))
def test_matches_enumeration_and_is_symmetric(wins: int, losses: int) -> None:
    p = mcnemar_p(wins, losses)
    assert p == mcnemar_p(losses, wins)
    assert 0 < p <= 1
    assert abs(p - _brute(wins, losses)) < 1e-12
