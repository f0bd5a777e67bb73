"""Laws of symbolic dims (`ir.symbolic`): arithmetic agrees with integers at
every binding, the canonical text parses back to the same polynomial, and a
bound is never below a value in range."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from ir.symbolic import (
    UNKNOWN,
    dim_add,
    dim_bound,
    dim_div,
    dim_floordiv,
    dim_mul,
    dim_prod,
    dim_sub,
    dim_value,
    parse_dim,
)

SYMS = ("batch_size", "sequence_length", "past_sequence_length")
dims = st.recursive(
    st.one_of(st.integers(-3, 9), st.sampled_from(SYMS)),
    lambda inner: st.tuples(st.sampled_from([dim_add, dim_sub, dim_mul]), inner, inner).map(lambda t: t[0](t[1], t[2])),
    max_leaves=6,
)
envs = st.fixed_dictionaries({s: st.integers(0, 20) for s in SYMS})


@given(dims, dims, envs)
def test_arithmetic_agrees_with_integers(a, b, env):
    va, vb = dim_value(a, env), dim_value(b, env)
    assert dim_value(dim_add(a, b), env) == va + vb
    assert dim_value(dim_sub(a, b), env) == va - vb
    assert dim_value(dim_mul(a, b), env) == va * vb


@given(dims)
def test_canonical_text_round_trips(d):
    if isinstance(d, str):
        assert str(parse_dim(d)) == d  # equal polynomials print equal


@given(dims)
def test_a_bound_is_never_below_a_value_in_range(d):
    ranges = {"batch_size": (1, 3), "sequence_length": (0, 4), "past_sequence_length": (2, 5)}
    hi = dim_bound(d, ranges)
    for vals in itertools.product(*(range(lo, up + 1) for lo, up in ranges.values())):
        assert dim_value(d, dict(zip(ranges, vals))) <= hi


def test_named_dims_as_onnx_writes_them():
    d = "past_sequence_length + sequence_length"
    assert dim_add("sequence_length", "past_sequence_length") == d
    assert dim_sub(d, "sequence_length") == "past_sequence_length"
    assert dim_value(d, {"past_sequence_length": 8, "sequence_length": 1}) == 9
    assert dim_prod(["batch_size", "sequence_length", 64]) == "64*batch_size*sequence_length"
    assert dim_div("64*batch_size*sequence_length", dim_prod(["batch_size", 4])) == "16*sequence_length"
    assert dim_div("batch_size", 2) == UNKNOWN and dim_floordiv("4*batch_size", 2) == "2*batch_size"
    assert dim_bound("sequence_length", {}) is None  # unbounded: not planned
    assert parse_dim("?") is None
