"""Float32 activation kernels (`runtime.kernels.activations`): error bounds against float64,
results written in place when the view aliases the input, float16 rounded once."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from runtime.kernels import lookup_kernel
from runtime.kernels.activations import ACTS, apply_act, erf

X = np.linspace(-12, 12, 200_001, dtype=np.float32)
X64 = X.astype(np.float64)
ERF64 = np.vectorize(math.erf)(X64)


def _run(kind: str, x: np.ndarray, attrs: dict | None = None, out: np.ndarray | None = None, extra=()) -> np.ndarray:
    return lookup_kernel(kind).fn([x, *extra], attrs or {}, [out])[0]


def test_erf_is_within_its_stated_bound_in_float32():
    got = _run("Erf", X)
    assert got.dtype == np.float32
    assert np.abs(got - ERF64).max() <= 5e-7  # A&S 7.1.26's 1.5e-7 plus float32 rounding (4.8e-7)
    assert np.array_equal(_run("Erf", -X), -got)  # odd, exactly


def test_erf_of_float64_stays_float64_and_tighter():
    got = _run("Erf", X64)
    assert got.dtype == np.float64 and np.abs(got - ERF64).max() < 2e-7


def test_sigmoid_has_no_overflow_and_stays_in_0_1():
    ref = 1 / (1 + np.exp(-X64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning at x = -12 or -1e30
        got = _run("Sigmoid", X)
        big = _run("Sigmoid", np.array([-1e30, 1e30, -np.inf, np.inf], np.float32))
    assert np.abs(got - ref).max() <= 1.2e-7
    assert got.min() >= 0 and got.max() <= 1
    np.testing.assert_array_equal(big, [0, 1, 0, 1])


@pytest.mark.parametrize(("kind", "attrs", "ref"), [
    ("Swish", {"alpha": 1.5}, lambda x: x / (1 + np.exp(-1.5 * x))),
    ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}, lambda x: np.clip(0.25 * x + 0.4, 0, 1)),
    ("HardSwish", {}, lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    ("LeakyRelu", {"alpha": 0.1}, lambda x: np.where(x >= 0, x, 0.1 * x)),
    ("LeakyRelu", {"alpha": 3.0}, lambda x: np.where(x >= 0, x, 3.0 * x)),
])
def test_activations_match_their_formulas(kind, attrs, ref):
    want = ref(X64)
    got = _run(kind, X, attrs)
    assert np.abs(got - want).max() <= 3e-7 * max(1.0, np.abs(want).max())


def test_clip_with_scalar_bounds_and_nan():
    x = np.array([-3, -0.5, np.nan, 2, 9], np.float32)
    got = _run("Clip", x, extra=(np.float32(0), np.float32(6)))
    np.testing.assert_array_equal(got, [0, 0, np.nan, 2, 6])
    np.testing.assert_array_equal(_run("Clip", x, extra=(None, np.float32(1))), [-3, -0.5, np.nan, 1, 1])
    i = np.array([-5, 3, 300], np.int32)
    np.testing.assert_array_equal(_run("Clip", i, extra=(np.int32(0), np.int32(255))), [0, 3, 255])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=st.floats(-20, 20, width=32)),
       st.sampled_from(["Sigmoid", "Swish", "HardSwish", "HardSigmoid", "LeakyRelu", "Erf"]))
def test_in_place_equals_out_of_place(x, kind):
    """A result view that is the input itself (the buffer planner's in-place reuse) gives
    the same numbers as a separate one."""
    apart = _run(kind, x.copy(), out=np.empty_like(x))
    y = x.copy()
    same = _run(kind, y, out=y)
    assert same is y
    np.testing.assert_array_equal(same, apart)


def test_float16_is_computed_in_float32_and_rounded_once():
    x = X[::10].astype(np.float16)
    for kind in ("Sigmoid", "Erf", "HardSwish"):
        got = _run(kind, x, out=np.empty_like(x))
        want = _run(kind, x.astype(np.float32)).astype(np.float16)
        assert got.dtype == np.float16 and np.array_equal(got, want), kind


def test_epilogues_in_place_match_the_kernels():
    r = X.reshape(1, -1, 1, 1).copy()
    for act, kind in [("sigmoid", "Sigmoid"), ("silu", "Swish"), ("hardswish", "HardSwish")]:
        y = r.copy()
        assert apply_act(y, act) is y
        np.testing.assert_array_equal(y, _run(kind, r))
    y = r.copy()
    np.testing.assert_array_equal(apply_act(y, "relu6"), np.clip(r, 0, 6))
    assert apply_act(r.copy(), "no-such-act") is None
    assert set(ACTS) >= {"sigmoid", "silu", "hardswish", "hardsigmoid", "relu6"}


def test_erf_helper_keeps_dtypes():
    assert erf(np.float32(0.5) * np.ones(3, np.float32)).dtype == np.float32
    assert erf(np.ones(3, np.float16)).dtype == np.float16
    assert erf(np.ones(3)).dtype == np.float64
