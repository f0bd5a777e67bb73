"""Laws of the one sliding-window geometry (`ir.geometry`) every stage uses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ir.geometry import same_pads, transposed_out, window_out

sizes, kernels, strides, dils = (st.integers(1, 64), st.integers(1, 7), st.integers(1, 4), st.integers(1, 3))


@given(sizes, kernels, strides, dils, st.booleans())
def test_same_padding_gives_ceil_size_over_stride(n, k, s, d, upper):
    b, e = same_pads(n, k, s, d, upper)
    assert abs(b - e) <= 1 and (e >= b) == (upper or b == e)
    assert window_out(n, k, s, d, b, e) == -(-n // s)


@given(sizes, kernels, strides, dils, st.integers(0, 3), st.integers(0, 3))
def test_a_transposed_conv_undoes_the_conv_shape(n, k, s, d, pb, pe):
    out = window_out(n, k, s, d, pb, pe)
    if out >= 1:
        # the transposed conv of the conv's output covers the input up to the stride's remainder
        assert n - (s - 1) <= transposed_out(out, k, s, d, pb, pe) <= n


@given(sizes, kernels, strides, st.integers(0, 3))
def test_ceil_mode_adds_at_most_one_window_that_starts_inside(n, k, s, p):
    p = min(p, k // 2)  # pads beyond half the window are not legal pooling (ONNX, PyTorch)
    floor, ceil = window_out(n, k, s, 1, p, p), window_out(n, k, s, 1, p, p, ceil=True)
    assert ceil - floor in (0, 1)
    assert (ceil - 1) * s < n + p
