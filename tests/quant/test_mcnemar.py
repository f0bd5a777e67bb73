"""The paired significance test bench/int8_accuracy.py prints beside atcpy vs onnxruntime, and its verdict."""

from __future__ import annotations

from fractions import Fraction
from itertools import product

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.int8_accuracy import mcnemar_p, verdict


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


def _row(top1: float, cosine: float, flips: int, wins: int = 0, losses: int = 0) -> dict:
    return {"top1": top1, "cosine": cosine, "flips": flips, "vs_ort_wins": wins, "vs_ort_losses": losses,
            "vs_ort_p": mcnemar_p(wins, losses)}


def test_verdict() -> None:
    ort = _row(0.976, 0.9999, 40)
    assert verdict(_row(0.976, 0.9999, 40), ort) == "yes"  # equal counts as at least as accurate
    assert verdict(_row(0.977, 0.99995, 50, 5, 3), ort) == "yes"
    # top-1 lower by a gap the paired test cannot tell from noise, closer to FP32: a tie
    assert verdict(_row(0.9755, 0.99995, 27, 19, 28), ort) == "tie"
    # ... but not when atcpy is the one further from FP32, or flips more
    assert verdict(_row(0.9755, 0.9998, 27, 19, 28), ort) == "NO"
    assert verdict(_row(0.9755, 0.99995, 41, 19, 28), ort) == "NO"
    # a gap the test does call (0 vs 10 discordant pairs, p < 0.002) is a loss
    assert verdict(_row(0.975, 0.99995, 10, 0, 10), ort) == "NO"
    # a higher top-1 with a worse cosine is not a win either
    assert verdict(_row(0.977, 0.9998, 40, 5, 0), ort) == "NO"
