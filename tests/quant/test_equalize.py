"""Activation equalization: the float model is unchanged, the channel ranges the
per-tensor scale must cover are balanced with the tensor's range kept, the law
of the scale choice, and the accuracy report divides the scale back out."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ir import DType, Graph, TensorType, verify
from passes._equalize import TINY, equalize, find_pairs, scales
from tests.quant._eval import eval_runner, run_graph


def _cnn(rng: np.random.Generator, spread: float) -> Graph:
    """conv -> relu -> maxpool -> conv -> relu -> flatten -> Gemm(transB) -> relu -> MatMul,
    the first conv's channels `spread` apart in range."""
    g = Graph("cnn")
    x = g.add_input("x", TensorType(DType.f32, ("N", 2, 8, 8)))
    w1 = rng.standard_normal((6, 2, 3, 3)) * np.geomspace(1.0, spread, 6)[:, None, None, None]
    a = g.add_op("fused.conv", [x, g.const(w1.astype(np.float32), "w1"),
                                g.const(rng.standard_normal(6).astype(np.float32), "b1")],
                 {"act": "relu", "kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, names=["a"]).result
    p = g.add_op("MaxPool", [a], {"kernel_shape": [2, 2], "strides": [2, 2]}, names=["p"]).result
    c = g.add_op("Conv", [p, g.const(rng.standard_normal((4, 6, 3, 3)).astype(np.float32), "w2")],
                 {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, names=["c"]).result
    r = g.add_op("Relu", [c], names=["r"]).result
    f = g.add_op("Flatten", [r], {"axis": 1}, names=["f"]).result
    h = g.add_op("Gemm", [f, g.const(rng.standard_normal((5, 64)).astype(np.float32), "w3"),
                          g.const(rng.standard_normal(5).astype(np.float32), "b3")], {"transB": 1}, names=["h"]).result
    hr = g.add_op("Relu", [h], names=["hr"]).result
    g.outputs = [g.add_op("MatMul", [hr, g.const(rng.standard_normal((5, 3)).astype(np.float32), "w4")],
                          names=["y"]).result]
    verify(g)
    return g


def _sweep(data: dict[str, np.ndarray]):
    def sweep(graph: Graph, names, each) -> None:
        for name, arr in eval_runner(graph, names)(data).items():
            each(name, arr)
    return sweep


def _channel_max(x: np.ndarray) -> np.ndarray:
    return np.abs(np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)).max(axis=1)


@settings(max_examples=15, deadline=None)
@given(st.floats(1.0, 50.0), st.integers(0, 2**31 - 1))
def test_the_float_model_is_unchanged_and_ranges_are_balanced(spread: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = _cnn(rng, spread)
    data = {"x": rng.standard_normal((6, 2, 8, 8)).astype(np.float32)}
    before = run_graph(g, data, ["p"])
    layers = [op for op in g.ops if op.kind in ("fused.conv", "Conv", "Gemm", "MatMul")]
    assert len(find_pairs(g, layers)) == 3  # conv->conv, conv->Gemm (through Flatten), Gemm->MatMul
    done = equalize(g, layers, _sweep(data))
    verify(g)
    after = run_graph(g, data, ["p"])
    np.testing.assert_allclose(after["y"], before["y"], rtol=1e-4, atol=1e-4 * np.abs(before["y"]).max())
    assert set(done) <= {"a", "c", "h"}
    r0, r1 = _channel_max(before["p"]), _channel_max(after["p"])
    np.testing.assert_allclose(r1.max(), r0.max(), rtol=1e-5)  # the tensor's range is kept ...
    live = r0 > 0
    if "a" in done:  # ... and what A's result was scaled by is what is reported
        np.testing.assert_allclose(r1[live], r0[live] * done["a"].scale[live], rtol=1e-4)
    if spread >= 4.0:  # ... while its channels come closer together
        assert r1[live].min() / r1[live].max() > r0[live].min() / r0[live].max()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1e3), st.floats(0.0, 1e3)), min_size=1, max_size=16))
def test_scales_balance_range_and_weight_and_keep_the_range(rw: list[tuple[float, float]]) -> None:
    r, w = (np.array(v) for v in zip(*rw))
    s = scales(r, w)
    assert np.all(s > 0)
    ok = (r > TINY * r.max()) & (w > TINY * w.max())
    assert np.all(s[~ok] == 1.0)
    if ok.any():
        np.testing.assert_allclose((s * r)[ok].max(), r[ok].max(), rtol=1e-9)
        # s_c r_c and w_c / s_c are in the same ratio for every channel
        ratio = (s * r)[ok] / (w / s)[ok]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)


def test_the_accuracy_report_divides_the_scale_out(mlp_onnx, digits, tmp_path) -> None:
    """With equalization the MLP's hidden layers compute s times their float result;
    the report compares them after dividing s out, so their SNR stays that of
    quantization (tens of dB), not of a rescaling (a few dB)."""
    from compiler.accuracy import build_accuracy_report

    npz = tmp_path / "calib.npz"
    np.savez(npz, X=digits[0][:200])
    opts = {"calibration_data": str(npz), "input_shapes": {"X": [100, 64]}, "extra": {"progress": False},
            "calibration_method": "max"}
    for q, eq in (("quantize{equalize=true}", True), ("quantize", False)):
        rep = build_accuracy_report(str(mlp_onnx), {**opts, "passes": f"canonicalize,fuse,{q},place,assign-buffers"})
        assert len(rep["layers"]) == 3
        assert min(layer["snr_db"] for layer in rep["layers"]) > 25, (eq, rep["layers"])
