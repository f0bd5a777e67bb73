"""Winograd F(2x2, 3x3) gives the direct convolution's numbers (up to rounding).

The transforms are checked against `onnx.reference`'s Conv on odd and even
sizes, asymmetric pads and batches (the ragged last tile row/column and the
zero border of the channels-last copy are where a tile algorithm goes wrong),
and the Conv kernel is checked to take the Winograd path only where the rule says.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.kernels.conv import conv
from runtime.kernels.matmul import Scratch
from runtime.kernels.winograd import winograd_applies, winograd_conv3x3, winograd_weights
from tests.runtime.helpers import assert_close, reference


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 9), m=st.integers(1, 9), h=st.integers(1, 12), w=st.integers(1, 12),
       pads=st.lists(st.integers(0, 2), min_size=4, max_size=4), seed=st.integers(0, 2**16))
def test_winograd_equals_direct_conv(n, c, m, h, w, pads, seed):
    if h + pads[0] + pads[2] < 3 or w + pads[1] + pads[3] < 3:
        return  # no output
    r = np.random.RandomState(seed)
    x = r.standard_normal((n, c, h, w)).astype(np.float32)
    wt = r.standard_normal((m, c, 3, 3)).astype(np.float32)
    want = reference("Conv", [x, wt], {"pads": pads})[0]
    got = np.full(want.shape, np.nan, np.float32)
    scratch = Scratch()
    for _ in range(2):  # the second run reuses dirty scratch buffers
        winograd_conv3x3(x, winograd_weights(wt, np.dtype(np.float32)), pads, got,
                         lambda key, shape, dt: scratch.get(key, shape, dt))
        assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_conv_kernel_takes_the_winograd_path_where_it_applies():
    r = np.random.RandomState(1)
    x = r.standard_normal((1, 64, 14, 14)).astype(np.float32)
    w = r.standard_normal((128, 64, 3, 3)).astype(np.float32)
    b = r.standard_normal(128).astype(np.float32)
    assert winograd_applies((3, 3), [1, 1], [1, 1], 1, 64, 128, (14, 14))
    attrs = {"pads": [1, 1, 1, 1], "_scratch": Scratch()}
    got = conv(x, w, b, attrs, act="relu")
    assert "_winograd_u" in attrs  # the weight transform is kept for the next run
    want = np.maximum(reference("Conv", [x, w, b], {"pads": [1, 1, 1, 1]})[0], 0)
    assert_close(got, want, rtol=1e-4, atol=1e-4)
    again = conv(x, w, b, attrs, act="relu")
    np.testing.assert_array_equal(again, got)


def test_winograd_is_not_used_for_strided_dilated_grouped_or_thin_convs():
    assert not winograd_applies((3, 3), [2, 2], [1, 1], 1, 64, 64, (14, 14))
    assert not winograd_applies((3, 3), [1, 1], [2, 2], 1, 64, 64, (14, 14))
    assert not winograd_applies((3, 3), [1, 1], [1, 1], 2, 64, 64, (14, 14))
    assert not winograd_applies((5, 5), [1, 1], [1, 1], 1, 64, 64, (14, 14))
    assert not winograd_applies((3, 3), [1, 1], [1, 1], 1, 3, 64, (224, 224))  # K = Cin too small for BLAS
