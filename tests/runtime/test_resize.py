"""The native Resize kernel (`runtime.kernels.resize`) against onnxruntime, mode by mode.

(Not onnx.reference: its neighbour search rounds a coordinate like 2 + 4e-16 to 2
after padding while its weights keep the 4e-16, so it reads the wrong pixel at
such points -- half_pixel_symmetric at scale 1.5 hits one.)"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from runtime.kernels import lookup_kernel
from runtime.kernels.resize import axis_plan

CTMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
        "tf_half_pixel_for_nn"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def _reference(x, scales, sizes, opset=19, **attrs):
    inputs = ["x", "", "scales" if scales is not None else "", "sizes" if sizes is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    node = helper.make_node("Resize", inputs, ["y"], **attrs)
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)]
    feeds = {"x": x}
    if scales is not None:
        ins.append(helper.make_tensor_value_info("scales", TensorProto.FLOAT, [len(scales)]))
        feeds["scales"] = np.asarray(scales, np.float32)
    if sizes is not None:
        ins.append(helper.make_tensor_value_info("sizes", TensorProto.INT64, [len(sizes)]))
        feeds["sizes"] = np.asarray(sizes, np.int64)
    g = helper.make_graph([node], "r", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _native(x, scales, sizes, opset=19, **attrs):
    entry = lookup_kernel("Resize")
    attrs = {**attrs, "_opset": opset}
    assert entry.accepts(attrs, ["f32"])
    s = None if scales is None else np.asarray(scales, np.float32)
    z = None if sizes is None else np.asarray(sizes, np.int64)
    return entry.fn([x, None, s, z], attrs, None)[0]


X = np.random.default_rng(0).standard_normal((1, 2, 5, 7)).astype(np.float32)
CASES = [([1, 1, 2.0, 1.5], None), ([1, 1, 0.6, 0.5], None), (None, [1, 2, 9, 4]), (None, [1, 2, 3, 11]),
         ([1, 1, 1.7, 2.3], None)]


@pytest.mark.parametrize(("ctm", "case"), list(itertools.product(CTMS, CASES)))
def test_linear_and_cubic_match_the_reference(ctm, case):
    scales, sizes = case
    for mode, extra in [("linear", {}), ("cubic", {}), ("cubic", {"cubic_coeff_a": -0.5, "exclude_outside": 1})]:
        want = _reference(X, scales, sizes, mode=mode, coordinate_transformation_mode=ctm, **extra)
        got = _native(X, scales, sizes, mode=mode, coordinate_transformation_mode=ctm, **extra)
        assert got.shape == want.shape and got.dtype == np.float32, (mode, extra)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{mode} {extra}")


def _coords64(n_in: int, n_out: int, scale: float, ctm: str) -> np.ndarray:
    """The spec's source coordinates in float64 (the kernel and onnxruntime use float32)."""
    x = np.arange(n_out, dtype=np.float64)
    if ctm == "asymmetric":
        return x / scale
    if ctm == "align_corners":
        return np.zeros(n_out) if n_out == 1 else x * (n_in - 1) / (n_out - 1)
    if ctm == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if ctm == "half_pixel_symmetric":
        return n_in / 2 * (1 - n_out / (scale * n_in)) + (x + 0.5) / scale - 0.5
    return (x + 0.5) / scale - 0.5


def _near_tie(n_in, n_out, scale, ctm, nearest) -> np.ndarray:
    """Output positions whose source coordinate is within float32 noise of a rounding
    boundary (k for floor/ceil, k + 1/2 for the round modes) without being on it: there
    the pick depends on the last bit of a float32 division, not on the spec.  (A
    coordinate exactly on a boundary, as every one of an integer scale is, must match.)"""
    c = _coords64(n_in, n_out, float(np.float32(scale)), ctm)
    edge = c if nearest in ("floor", "ceil") else c - 0.5
    gap = np.abs(edge - np.round(edge))
    if ctm == "half_pixel_symmetric":  # its offset is float32 noise: even an exact float64 landing is fragile
        return gap < 1e-5
    return (gap > 0) & (gap < 1e-5)


@pytest.mark.parametrize(("ctm", "nearest", "case"), list(itertools.product(CTMS, NEAREST, CASES)))
def test_nearest_matches_onnxruntime_exactly_away_from_ties(ctm, nearest, case):
    scales, sizes = case
    want = _reference(X, scales, sizes, mode="nearest", coordinate_transformation_mode=ctm, nearest_mode=nearest)
    got = _native(X, scales, sizes, mode="nearest", coordinate_transformation_mode=ctm, nearest_mode=nearest)
    assert got.shape == want.shape
    ties = [_near_tie(X.shape[a], got.shape[a], (scales[a] if scales else got.shape[a] / X.shape[a]), ctm, nearest)
            for a in (2, 3)]
    clear = ~(ties[0][:, None] | ties[1][None, :])
    assert clear.mean() > 0.5 or ctm == "half_pixel_symmetric"  # its downscales land near integers throughout
    np.testing.assert_array_equal(got[..., clear], want[..., clear])


def test_defaults_axes_and_integer_data():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(_native(x, [2.0], None, axes=[2]), _reference(x, [2.0], None, axes=[2]))
    np.testing.assert_allclose(_native(x, None, [3, 5], axes=[1, 2], mode="linear"),
                               _reference(x, None, [3, 5], axes=[1, 2], mode="linear"), rtol=1e-6)
    i = np.arange(12, dtype=np.int64).reshape(1, 1, 3, 4)
    entry = lookup_kernel("Resize")
    assert entry.accepts({"mode": "nearest", "_opset": 13}, ["i64"])
    assert not entry.accepts({"mode": "linear", "_opset": 13}, ["i64"])  # integer linear: the fallback rounds it
    got = entry.fn([i, None, np.array([1, 1, 2, 2], np.float32)], {"mode": "nearest", "_opset": 13}, None)[0]
    assert got.dtype == np.int64 and got.shape == (1, 1, 6, 8)


def test_declined_cases_go_to_the_fallback():
    accepts = lookup_kernel("Resize").accepts
    assert not accepts({"mode": "linear", "antialias": 1, "_opset": 18}, ["f32"])
    assert not accepts({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, ["f32"])
    assert not accepts({"mode": "nearest", "_opset": 10}, ["f32"])
    assert not accepts({"mode": "linear", "keep_aspect_ratio_policy": "not_larger", "_opset": 18}, ["f32"])


def test_non_finite_input_stays_where_it_was():
    """The dense (GEMM) form is for finite input only: a NaN must not spread along a row."""
    x = np.ones((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    got = _native(x, [1, 1, 2, 2], None, mode="linear")
    want = _reference(x, [1, 1, 2, 2], None, mode="linear")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).sum() < got.size // 4


def test_axis_plan_weights_sum_to_one():
    for mode, ctm in itertools.product(["linear", "cubic"], CTMS):
        _, w = axis_plan(7, 19, 19 / 7, mode, ctm, "round_prefer_floor", -0.75, False)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


def test_upsample_nearest_repeats():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    got = lookup_kernel("Upsample").fn([x, np.array([1, 1, 2, 3], np.float32)], {"mode": "nearest"}, None)[0]
    np.testing.assert_array_equal(got, np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))
