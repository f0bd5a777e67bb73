"""Calibration statistics on synthetic data, and the pass's option handling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.calibration import Histogram, calibrate, entropy_amax, percentile_amax
from ir import DType, Graph, TensorType, verify
from passes.base import PassContext
from passes.quantize import Quantize
from tests.quant._eval import eval_runner as _eval_runner
from tests.quant._eval import run_graph


def _hist(x: np.ndarray) -> Histogram:
    h = Histogram(float(np.abs(x).max()))
    h.add(x)
    return h


def test_percentile_matches_numpy_to_a_bin() -> None:
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    h = _hist(x)
    for p in (50.0, 99.0, 99.9):
        assert abs(percentile_amax(h, p) - np.percentile(np.abs(x), p)) <= 2 * h.hi / len(h.counts)


def test_outliers_stretch_max_but_not_percentile_or_entropy() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200_000).astype(np.float32)
    clean_p = percentile_amax(_hist(x), 99.9)
    clean_e = entropy_amax(_hist(x))
    pick = rng.random(x.size) < 0.0005
    x[pick] *= 100
    h = _hist(x)
    assert h.hi > 50 * clean_p  # what `max` would take
    assert percentile_amax(h, 99.9) < 3 * clean_p
    # TensorRT's search starts at 128 of 2048 bins, so entropy cannot go below hi / 16,
    # but it does go there: the outliers are clipped, not given the scale
    assert clean_e < entropy_amax(h) < h.hi / 10
    assert 2.5 < clean_e < 6.0  # a Gaussian's KL threshold sits a few sigma out


@settings(max_examples=25, deadline=None)
@given(st.floats(0.1, 100.0), st.integers(0, 2**31 - 1))
def test_thresholds_never_exceed_the_range(scale: float, seed: int) -> None:
    x = (np.random.default_rng(seed).standard_normal(5000) * scale).astype(np.float32)
    h = _hist(x)
    assert 0 < percentile_amax(h, 99.9) <= h.hi * (1 + 1e-9)
    assert 0 < entropy_amax(h) <= h.hi * (1 + 1e-9)


def test_exact_zeros_do_not_move_the_entropy_threshold() -> None:
    """A ReLU output is half exact zeros; they quantize exactly at any scale, so the
    KL threshold of the non-zero part must not change (TensorRT's search would
    otherwise see a spike in the first bin and clip harder)."""
    a = np.maximum(np.random.default_rng(4).standard_normal(50_000), 0).astype(np.float32)
    pos = a[a > 0]
    with_zeros = _hist(a)
    without = Histogram(with_zeros.hi)
    without.add(pos)
    assert with_zeros.zeros == a.size - pos.size and without.zeros == 0
    assert entropy_amax(with_zeros) == entropy_amax(without)
    assert percentile_amax(with_zeros, 99.0) < percentile_amax(without, 99.0)  # percentiles do count zeros


def test_a_discrete_distribution_keeps_its_range_under_entropy() -> None:
    """Pixel values k/16: every threshold that keeps whole spikes has KL 0 — a tiny
    one and the full range alike; ties go to clipping less."""
    x = np.random.default_rng(5).integers(0, 17, 20_000).astype(np.float32) / 16
    assert entropy_amax(_hist(x)) == pytest.approx(1.0)


def test_an_all_zero_tensor_gets_a_finite_scale() -> None:
    h = Histogram(0.0)
    h.add(np.zeros(10, np.float32))
    assert percentile_amax(h, 99.9) == 0.0 and entropy_amax(h) == 0.0


def _mlp() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.f32, ("N", 16)))
    w0 = g.const(rng.standard_normal((16, 8)).astype(np.float32), "w0")
    b0 = g.const(rng.standard_normal(8).astype(np.float32), "b0")
    w1 = g.const(rng.standard_normal((8, 4)).astype(np.float32), "w1")
    h = g.add_op("fused.matmul_add_relu", [x, w0, b0], names=["h"]).result
    g.outputs = [g.add_op("MatMul", [h, w1], names=["y"]).result]
    return g


def test_calibrate_finds_every_cube_input_and_its_range() -> None:
    g = _mlp()
    x = np.random.default_rng(2).standard_normal((50, 16)).astype(np.float32)
    res = calibrate(g, {"x": x}, "max", batch_size=7, runner=_eval_runner)
    assert set(res.amax) == {"x", "h"} and res.samples == 50
    assert res.amax["x"] == pytest.approx(float(np.abs(x).max()))
    h = run_graph(g, {"x": x}, ["h"])["h"]
    assert res.amax["h"] == pytest.approx(float(np.abs(h).max()), rel=1e-6)
    res = calibrate(g, {"x": x}, "percentile", 90.0, batch_size=7, runner=_eval_runner)
    assert res.amax["x"] < float(np.abs(x).max())


def test_quantized_graph_tracks_the_float_graph() -> None:
    g = _mlp()
    x = np.random.default_rng(3).standard_normal((64, 16)).astype(np.float32)
    cal = calibrate(g, {"x": x}, "max", runner=_eval_runner)
    q = g.clone()
    ctx = PassContext(options={"calibration": cal})
    assert Quantize().run(q, ctx)
    verify(q)
    assert ctx.stats["quantization"]["quantized_ops"] == 2
    assert ctx.stats["quantization"]["requantize_fused"] == 1
    ref, got = run_graph(g, {"x": x})["y"], run_graph(q, {"x": x})["y"]
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.999


def test_pass_is_a_no_op_outside_allow_quantize_and_without_ranges() -> None:
    g = _mlp()
    assert not Quantize().run(g, PassContext(options={"precision_mode": "force_fp16", "calibration": {"x": 1.0}}))
    ctx = PassContext(options={"calibration": {"x": 1.0}})
    assert Quantize().run(g, ctx)  # x has a range, h does not: one op quantized, one kept with a note
    assert ctx.stats["quantization"]["quantized_ops"] == 1
    assert any("no calibration range for %h" in d for d in ctx.diagnostics)


def test_percentile_agrees_with_onnxruntime_symmetric_percentile() -> None:
    """bench/int8_accuracy.py compares against onnxruntime's symmetric percentile
    calibrator (2048 bins of |x|, zeros counted, the left edge of the bin the
    percentile falls in): the same threshold to within one of its bins."""
    import contextlib
    import io

    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(7)
    parts = [np.maximum(rng.standard_normal(6400), 0).astype(np.float32) for _ in range(2)]
    parts[1][:7] *= 20  # a few outliers in the second batch: ORT widens its histogram, atcpy sees them up front
    ort = HistogramCollector("percentile", True, 2048, 128, 99.9, "same")
    with contextlib.redirect_stdout(io.StringIO()):
        for b in parts:
            ort.collect({"t": [b]})
        theirs = float(ort.compute_collection_result()["t"][1])
    h = Histogram(float(max(b.max() for b in parts)))
    for b in parts:
        h.add(b)
    ours = percentile_amax(h, 99.9)
    assert abs(ours - theirs) <= float(parts[0].max()) / 2048 + h.hi / len(h.counts)
