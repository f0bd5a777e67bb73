"""GPTQ weight rounding: its guarantees on the fixed grid (codes in [-127, 127],
zeros stay zero, never a larger layer error than plain rounding on the
calibration inputs), the Hessian's layout against an independent conv, and
the quantize pass with it on against it off on real layer inputs."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.calibration import calibrate
from ir import DType, Graph, TensorType, verify
from passes._gptq import Hessian, gptq_rows, layer_error, round_rows
from passes.base import PassContext
from passes.quantize import Quantize
from runtime.kernels.quant import quantize, scale_from_amax
from tests.quant._eval import eval_runner, run_graph


def _correlated(rng: np.random.Generator, rows: int, k: int, mix: float) -> np.ndarray:
    """Inputs whose columns share `mix` of a few common factors (as real activations do)."""
    common = rng.standard_normal((rows, 3)) @ rng.standard_normal((3, k))
    return (mix * common + (1 - mix) * rng.standard_normal((rows, k))).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 24), st.floats(0.0, 1.0), st.floats(0.0, 0.5), st.integers(0, 2**31 - 1))
def test_codes_stay_on_the_grid_and_never_lose_to_plain_rounding(n: int, k: int, mix: float, zeros: float,
                                                                 seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k))
    w[rng.random((n, k)) < zeros] = 0.0  # a pruned weight
    x = _correlated(rng, 64, k, mix)
    x[:, rng.random(k) < 0.2] = 0.0  # dead inputs (padding, a ReLU never on)
    h = x.astype(np.float64).T @ x
    s = np.asarray(scale_from_amax(np.abs(w).max(axis=1)), np.float64).reshape(-1)
    codes = gptq_rows(w, s, h)
    assert np.array_equal(codes, np.rint(codes)) and np.abs(codes).max(initial=0) <= 127
    assert np.all(codes[w == 0] == 0)
    plain = round_rows(w, s)
    assert np.all(layer_error(w, codes, s, h) <= layer_error(w, plain, s, h))


def test_gptq_cuts_the_error_on_correlated_inputs() -> None:
    """The point of it: with strongly correlated inputs, spreading each rounding
    error over the remaining columns cancels much of it."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 48))
    x = _correlated(rng, 512, 48, 0.9)
    h = x.astype(np.float64).T @ x
    s = np.asarray(scale_from_amax(np.abs(w).max(axis=1)), np.float64).reshape(-1)
    got = layer_error(w, gptq_rows(w, s, h), s, h).sum()
    assert got < 0.5 * layer_error(w, round_rows(w, s), s, h).sum()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 2), st.integers(1, 2), st.integers(0, 1), st.integers(1, 2), st.integers(0, 2**31 - 1))
def test_conv_hessian_gives_the_conv_output_error(group: int, stride: int, pad: int, dil: int, seed: int) -> None:
    """``Σ_g (w_g - q_g) H_g (w_g - q_g)ᵀ`` equals the squared output error of the
    convolution itself (torch as the oracle): H's rows are the conv's windows."""
    rng = np.random.default_rng(seed)
    c, m = 2 * group, 2 * group
    x = rng.standard_normal((3, c, 7, 6)).astype(np.float32)
    w = rng.standard_normal((m, c // group, 3, 2)).astype(np.float32)
    d = (rng.standard_normal(w.shape) * 0.1).astype(np.float32)
    attrs = {"strides": [stride, stride], "pads": [pad] * 4, "dilations": [dil, dil], "group": group,
             "kernel_shape": [3, 2]}
    hess = Hessian(True, attrs, (3, 2), group)
    hess.add(x)
    mg = m // group
    got = sum(np.einsum("nk,kl,nl->", d[g * mg:(g + 1) * mg].reshape(mg, -1).astype(np.float64),
                        hess.matrix(g, False), d[g * mg:(g + 1) * mg].reshape(mg, -1).astype(np.float64))
              for g in range(group))
    err = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(d, dtype=torch.float64),
                                     stride=stride, padding=pad, dilation=dil, groups=group)
    np.testing.assert_allclose(got, float((err ** 2).sum()), rtol=1e-6)


def test_centered_hessian_is_the_covariance() -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((200, 5)) + 3.0).astype(np.float32)
    hess = Hessian(False, {}, ())
    hess.add(x[:120])
    hess.add(x[120:])
    xc = x.astype(np.float64) - x.mean(axis=0)
    np.testing.assert_allclose(hess.matrix(0, True), xc.T @ xc, rtol=1e-6, atol=1e-6)


def _layer(kind: str, rng: np.random.Generator) -> tuple[Graph, np.ndarray]:
    g = Graph("one")
    if kind == "conv":
        x = g.add_input("x", TensorType(DType.f32, (8, 4, 6, 6)))
        w = g.const(rng.standard_normal((6, 4, 3, 3)).astype(np.float32), "w")
        g.outputs = [g.add_op("Conv", [x, w], {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}, names=["y"]).result]
        base = rng.standard_normal((8, 1, 6, 6))  # channels share a common image: correlated windows
        data = 0.8 * base + 0.2 * rng.standard_normal((8, 4, 6, 6))
    else:
        x = g.add_input("x", TensorType(DType.f32, ("N", 24)))
        w = g.const(rng.standard_normal((24, 7)).astype(np.float32), "w")
        g.outputs = [g.add_op("MatMul", [x, w], names=["y"]).result]
        data = _correlated(rng, 96, 24, 0.8)
    return g, data.astype(np.float32)


def test_pass_keeps_the_grid_and_lowers_the_layer_error() -> None:
    """Same scales and int8 range as plain rounding; on the calibration samples the
    integer layer's output error is lower with GPTQ (bias correction on or off)."""
    rng = np.random.default_rng(2)
    for kind in ("matmul", "conv"):
        g, x = _layer(kind, rng)
        cal = calibrate(g, {"x": x}, "max", runner=eval_runner)
        ref = run_graph(g, {"x": x})["y"].astype(np.float64)
        for bc in (False, True):
            got = {}
            for on in (False, True):
                q = g.clone()
                ctx = PassContext(options={"calibration": cal})
                assert Quantize(gptq=on, bias_correction=bc).run(q, ctx)
                verify(q)
                op = next(o for o in q.ops if o.kind in ("quant.matmul", "quant.conv"))
                wq, ws = op.operand_const(1), op.operand_const(3)
                assert wq.dtype == np.int8 and np.abs(wq.astype(np.int16)).max() <= 127
                assert ctx.stats["quantization"].get("gptq_layers", 0) == int(on)
                got[on] = (float(((run_graph(q, {"x": x})["y"] - ref) ** 2).mean()), ws)
            np.testing.assert_array_equal(got[True][1], got[False][1])  # the grid did not move
            assert got[True][0] < got[False][0], (kind, bc, got)


def test_plain_rounding_matches_the_runtime_quantizer() -> None:
    """The fallback codes are bit for bit what the runtime's quantize gives (ties too)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 9)).astype(np.float32)
    s = np.asarray(scale_from_amax(np.abs(w).max(axis=1)), np.float32)
    w[0, :3] = s[0] * np.array([0.5, 1.5, -2.5], np.float32)  # exact ties
    np.testing.assert_array_equal(round_rows(w, s), quantize(w, s, 0).astype(np.float64))
