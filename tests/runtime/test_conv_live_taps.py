"""Convs whose dilated taps read only padding drop those taps, and taps that read real input for
few outputs run as a GEMM over their window (`runtime.kernels.conv.sparse_taps`): DeepLab's ASPP
branches (dilation 12/24/36 on a 14x14 map).  Checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.kernels.conv import conv, live_taps, sparse_taps


def _ort_conv(x, w, b, attrs):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


CASES = [  # (C, M, H, W, k, strides, dilations, pads, group), expected live taps
    ((16, 8, 14, 14, 3, [1, 1], [36, 36], [36, 36, 36, 36], 1), 1),  # ASPP rate 36: a 1x1 conv
    ((16, 8, 14, 14, 3, [1, 1], [24, 24], [24, 24, 24, 24], 1), 1),
    ((8, 6, 10, 10, 5, [1, 1], [6, 6], [12, 12, 12, 12], 1), 9),  # dead, partial and full taps
    ((8, 6, 10, 12, 5, [2, 1], [6, 5], [12, 3, 9, 10], 2), None),  # strides, uneven pads, groups
    ((6, 6, 5, 5, 3, [1, 1], [6, 6], [6, 6, 6, 6], 3), 1),
    ((16, 8, 14, 14, 3, [1, 1], [12, 12], [12, 12, 12, 12], 1), 9),  # rate 12: all live, windows of 2 rows
    ((16, 8, 13, 11, 3, [2, 1], [10, 9], [10, 9, 10, 9], 1), 9),  # ... strided, uneven
]


@pytest.mark.parametrize(("case", "n_live"), CASES)
def test_dead_taps_are_dropped_and_the_result_is_unchanged(case, n_live):
    c, m, h, wd, k, s, d, p, g = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((m, c // g, k, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    attrs = {"kernel_shape": [k, k], "strides": s, "dilations": d, "pads": p, "group": g}
    want = _ort_conv(x, w, b, attrs)
    live = live_taps((h, wd), (k, k), s, d, p, want.shape[2:])
    if n_live is not None:
        assert len(live) == n_live
    assert sparse_taps((h, wd), (k, k), tuple(s), tuple(d), tuple(p), want.shape[2:]) is not None  # the sparse path
    assert sparse_taps((h, wd), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (h, wd)) is None  # an ordinary conv is not
    got = conv(x, w, b, dict(attrs, _scratch=None))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
