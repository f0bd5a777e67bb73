"""Bias correction: the mean-window identity it rests on, and its law — after
correction a single layer's mean error on the calibration samples is at most
half a bias step per output channel."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.calibration import calibrate
from ir import DType, Graph, TensorType, verify
from passes._bias_correction import Layer, expected_output, window_sum
from passes.base import PassContext
from passes.quantize import Quantize
from runtime.kernels.quant import int8_conv
from tests.quant._eval import eval_runner as _eval_runner
from tests.quant._eval import run_graph


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 2), st.integers(1, 2), st.integers(0, 2), st.integers(1, 2),
       st.integers(0, 2**31 - 1))
def test_conv_mean_is_the_weight_times_the_mean_window(n: int, group: int, stride: int, pad: int, dil: int,
                                                       seed: int) -> None:
    """E[Conv(x, W)] per channel == W . E[window] (zero padding included): exact in integers."""
    rng = np.random.default_rng(seed)
    c, m = 2 * group, 3 * group
    x = rng.integers(-127, 128, (n, c, 7, 6)).astype(np.int8)
    w = rng.integers(-127, 128, (m, c // group, 3, 2)).astype(np.int8)
    attrs = {"strides": [stride, stride], "pads": [pad, pad, pad, pad], "dilations": [dil, dil], "group": group,
             "kernel_shape": [3, 2]}
    layer = Layer("y", True, attrs, "x", 1.0, w.astype(np.float32), None)
    s, count = window_sum(x, layer)
    y = int8_conv(x, w, attrs)
    assert count == y.shape[0] * y.shape[2] * y.shape[3]
    np.testing.assert_allclose(expected_output(w, s / count, layer), y.mean(axis=(0, 2, 3)), rtol=1e-9, atol=1e-9)


def _single(kind: str, rng: np.random.Generator, bias: bool) -> Graph:
    g = Graph("one")
    if kind == "conv":
        x = g.add_input("x", TensorType(DType.f32, (4, 3, 6, 6)))
        w = g.const(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), "w")
        ops = [x, w] + ([g.const(rng.standard_normal(5).astype(np.float32), "b")] if bias else [])
        g.outputs = [g.add_op("Conv", ops, {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}, names=["y"]).result]
    else:
        x = g.add_input("x", TensorType(DType.f32, ("N", 16)))
        w = g.const(rng.standard_normal((16, 6)).astype(np.float32), "w")
        if bias:
            b = g.const(rng.standard_normal(6).astype(np.float32), "b")
            g.outputs = [g.add_op("fused.matmul_add", [x, w, b], names=["y"]).result]
        else:
            g.outputs = [g.add_op("MatMul", [x, w], names=["y"]).result]
    return g


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["matmul", "conv"]), st.booleans(), st.floats(0.0, 2.0), st.integers(0, 2**31 - 1))
def test_corrected_layer_has_no_mean_error_on_its_samples(kind: str, bias: bool, shift: float, seed: int) -> None:
    """Max calibration clips nothing, so the corrected layer's mean error per output
    channel over the calibration samples is the bias rounding only: <= half a step."""
    rng = np.random.default_rng(seed)
    g = _single(kind, rng, bias)
    shape = (4, 3, 6, 6) if kind == "conv" else (40, 16)
    x = (rng.standard_normal(shape) + shift).astype(np.float32)  # off-centre inputs: a real shift to correct
    cal = calibrate(g, {"x": x}, "max", runner=_eval_runner)
    axes = (0, 2, 3) if kind == "conv" else (0,)
    ref = run_graph(g, {"x": x})["y"].astype(np.float64)
    errs = {}
    for on in (False, True):
        q = g.clone()
        ctx = PassContext(options={"calibration": cal})
        assert Quantize(bias_correction=on).run(q, ctx)
        verify(q)
        op = next(o for o in q.ops if o.kind.startswith("quant.") and o.kind != "quant.quantize")
        step = float(op.attrs["x_scale"]) * op.operand_const(3).astype(np.float64)
        errs[on] = np.abs((ref - run_graph(q, {"x": x})["y"]).mean(axis=axes)), step
    err, step = errs[True]
    assert np.all(err <= step / 2 + 1e-5 * np.abs(ref).max())
    assert err.max() <= errs[False][0].max() + 1e-6
