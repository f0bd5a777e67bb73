"""The MSE clipping search (`passes.calibrator.mse_amax`): per-tensor thresholds
that lose least in a symmetric int8 round trip, measured on the raw data."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from passes.calibrator import mse_amax

NBINS = 16384  # the calibration histogram's size (compiler.calibration.NBINS)


def _amax(x: np.ndarray) -> float:
    """`mse_amax` on the histogram calibration collects: ``|x|`` in NBINS bins up to the max, zeros apart."""
    a = np.abs(x[x != 0]).astype(np.float64)
    hi = float(np.abs(x).max())
    counts = np.bincount(np.minimum((a * (NBINS / hi)).astype(np.int64), NBINS - 1), minlength=NBINS) if hi > 0 \
        else np.zeros(NBINS, np.int64)
    return mse_amax(counts, hi)


def _err(x: np.ndarray, t: float) -> float:
    """Mean squared error of symmetric int8 quantize-dequantize of `x` clipped at `t`."""
    s = t / 127
    return float(np.mean((x - np.clip(np.round(x / s), -127, 127) * s) ** 2))


def _outliers(seed: int, n: int = 200_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    pick = rng.random(n) < 0.002
    x[pick] *= 30
    return x


def test_gaussian_with_outliers_beats_max_and_percentile() -> None:
    x = _outliers(0)
    t = _amax(x)
    assert _err(x, t) < 0.8 * _err(x, float(np.abs(x).max()))
    assert _err(x, t) < 0.2 * _err(x, float(np.percentile(np.abs(x), 99.9)))


def test_it_is_the_brute_force_optimum() -> None:
    for x in (_outliers(1), np.random.default_rng(2).laplace(size=200_000)):
        grid = np.linspace(0.01, 1, 2000) * np.abs(x).max()
        best = min(_err(x, g) for g in grid)
        assert _err(x, _amax(x)) <= 1.01 * best


def test_laplace_clip_is_aciq_s() -> None:
    # Banner et al. (ACIQ): an 8-bit Laplace(b) is best clipped near 9.89 b
    x = np.random.default_rng(3).laplace(scale=2.0, size=1_000_000)
    assert abs(_amax(x) / 2.0 - 9.89) < 1.0


def test_bounded_data_is_not_clipped() -> None:
    x = np.random.default_rng(4).uniform(-3, 3, 100_000)
    assert _amax(x) > 0.98 * np.abs(x).max()


def test_empty_and_zero() -> None:
    assert mse_amax(np.zeros(NBINS), 0.0) == 0.0
    assert mse_amax(np.zeros(NBINS), 1.0) == 0.0


def _binned_err(x: np.ndarray, t: float) -> float:
    """`_err` on the histogram the search sees (NBINS merged to its 4096): each value at
    its bin's centre, zeros exact."""
    a = np.abs(x[x != 0])
    hi = float(np.abs(x).max())
    merge = NBINS // 4096
    centre = (np.minimum((a * (NBINS / hi)).astype(np.int64), NBINS - 1) // merge + 0.5) * (hi / 4096)
    return _err(centre, t)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1e-3, 1e3), st.sampled_from(["normal", "laplace", "uniform", "relu"]),
       st.integers(10, 20_000))
def test_never_worse_than_max(seed: int, scale: float, kind: str, n: int) -> None:
    """The law, exact on the histogram the search minimizes over (max is a candidate);
    on the raw values it holds up to the binning (a few percent with ten values)."""
    rng = np.random.default_rng(seed)
    x = {"normal": rng.standard_normal, "laplace": lambda k: rng.laplace(size=k), "uniform": lambda k: rng.uniform(-1, 1, k),
         "relu": lambda k: np.maximum(rng.standard_normal(k), 0)}[kind](n) * scale
    t, hi = _amax(x), float(np.abs(x).max())
    assert 0 < t <= hi
    assert _binned_err(x, t) <= _binned_err(x, hi) * (1 + 1e-9)
    if n >= 1000:
        assert _err(x, t) <= _err(x, hi) * 1.01


def test_depthwise_conv_weights_get_a_scale_per_channel() -> None:
    """A depthwise conv's channels differ by orders of magnitude after BatchNorm folding;
    one scale for all would round the small ones to zero.  quant.conv keeps one per channel."""
    from ir import DType, Graph, TensorType
    from passes.base import PassContext
    from passes.quantize import Quantize

    rng = np.random.default_rng(0)
    c = 6
    w = (rng.standard_normal((c, 1, 3, 3)) * np.logspace(-3, 1, c)[:, None, None, None]).astype(np.float32)
    g = Graph("dw")
    x = g.add_input("x", TensorType(DType.f32, (1, c, 8, 8)))
    conv = g.add_op("Conv", [x, g.const(w, "w")], {"group": c, "pads": [1, 1, 1, 1]}, names=["y"])
    g.outputs = [conv.result]
    assert Quantize().run(g, PassContext(options={"calibration": {"x": 1.0}}))
    op = next(o for o in g.ops if o.kind == "quant.conv")
    scale = op.operand_const(3)
    assert scale.shape == (c,)
    np.testing.assert_allclose(scale, np.abs(w).reshape(c, -1).max(1) / 127, rtol=1e-6)
    wq = op.operand_const(1)
    assert np.all(np.abs(wq).reshape(c, -1).max(1) == 127)  # every channel uses its whole grid
