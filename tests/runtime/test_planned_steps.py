"""Planned steps (`runtime.kernels.planner`): a planner's thunk computes what its
kernel computes, into the same view; the Session plans the steps whose views are
stable, replans when a binding replaces a view, and its results do not change."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.kernels import lookup_kernel
from runtime.kernels.matmul import Scratch


def _both(kind: str, ins: list, attrs: dict, out_shapes: list[tuple], out_dtypes: list) -> tuple[list, list]:
    """(kernel's results, the planned thunk's results) for the same operands."""
    entry = lookup_kernel(kind)
    assert entry is not None and entry.plan is not None, f"{kind} has no planner"
    attrs = {**attrs, "_scratch": Scratch()}
    want = [np.array(r) for r in entry.fn([np.copy(x) for x in ins], dict(attrs), None)]
    outs = [np.full(s, 7, d) for s, d in zip(out_shapes, out_dtypes)]
    thunk = entry.plan(ins, dict(attrs), outs)
    assert thunk is not None, f"{kind}: the planner declined {[np.shape(x) for x in ins]}"
    thunk()
    return want, outs


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, drop=st.integers(0, 3), kind=st.sampled_from(["Add", "Sub", "Mul", "Div", "LessOrEqual", "And"]))
def test_binary_planner_matches_kernel(shape, drop, kind):
    rng = np.random.default_rng(sum(shape) + drop)
    b_shape = tuple(1 if i < drop else d for i, d in enumerate(shape))[-max(1, len(shape) - 1):]
    if kind == "And":
        a, b = rng.random(shape) > 0.5, rng.random(b_shape) > 0.5
    else:
        a, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(b_shape).astype(np.float32) + 3
    out_dtype = bool if kind in ("LessOrEqual", "And") else np.float32
    want, got = _both(kind, [a, b], {}, [np.broadcast_shapes(shape, b_shape)], [out_dtype])
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("kind", ["Cos", "Sin", "Exp", "Neg", "Sqrt", "Tanh"])
def test_unary_planner_matches_kernel(kind):
    x = np.abs(np.random.default_rng(1).standard_normal((2, 3, 5)).astype(np.float32))
    want, got = _both(kind, [x], {}, [x.shape], [np.float32])
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("a_shape,b_shape", [((1, 1, 64), (64, 96)), ((2, 3, 8), (8, 5)), ((2, 4, 3, 8), (2, 4, 8, 6))])
def test_matmul_planner_matches_kernel(a_shape, b_shape):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(a_shape).astype(np.float32), rng.standard_normal(b_shape).astype(np.float32)
    want, got = _both("MatMul", [a, b], {}, [np.matmul(a, b).shape], [np.float32])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)


def test_movement_planners_match_kernels():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    want, got = _both("Transpose", [x], {"perm": [0, 2, 1, 3]}, [(2, 4, 3, 5)], [np.float32])
    np.testing.assert_array_equal(got[0], want[0])
    want, got = _both("Concat", [x, x[:, :, :2]], {"axis": 2}, [(2, 3, 6, 5)], [np.float32])
    np.testing.assert_array_equal(got[0], want[0])
    want, got = _both("Split", [x], {"axis": 3, "split": [2, 3]}, [(2, 3, 4, 2), (2, 3, 4, 3)], [np.float32] * 2)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    idx = np.array([[0, 2], [-1, 1]], np.int64)
    want, got = _both("Gather", [x, idx], {"axis": 1}, [(2, 2, 2, 4, 5)], [np.float32])
    np.testing.assert_array_equal(got[0], want[0])
    c = rng.random((1, 3, 4, 1)) > 0.5
    y = np.array([-np.inf], np.float32)
    want, got = _both("Where", [c, x, y], {}, [x.shape], [np.float32])
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_norm_and_activation_planners_match_kernels(approximate):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 16)).astype(np.float32) * 3
    w, b = rng.standard_normal(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    want, got = _both("LayerNormalization", [x, w, b], {"axis": -1, "epsilon": 1e-5}, [x.shape], [np.float32])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    want, got = _both("Gelu", [x], {"approximate": approximate}, [x.shape], [np.float32])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
    want, got = _both("fused.rms_norm", [x, w], {"epsilon": 1e-6}, [x.shape], [np.float32])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    want, got = _both("fused.swiglu", [x, x[::-1].copy()], {}, [x.shape], [np.float32])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
    q = rng.standard_normal((1, 4, 3, 16)).astype(np.float32)
    cos, sin = np.cos(x[:1, None]), np.sin(x[:1, None])
    for inter in (0, 1):
        want, got = _both("fused.rotary", [q, cos, sin], {"interleaved": inter}, [q.shape], [np.float32])
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)


def test_planner_declines_what_it_does_not_cover():
    plan = lookup_kernel("MatMul").plan
    a = np.ones((2, 3), np.float16)
    assert plan([a, np.ones((3, 4), np.float16)], {}, [np.empty((2, 4), np.float16)]) is None  # f16: the kernel widens
    assert plan([np.ones(3, np.float32), np.ones((3, 4), np.float32)], {}, [np.empty(4, np.float32)]) is None  # 1-D
    add = lookup_kernel("Add").plan
    assert add([np.ones(3, np.float32), np.ones(3, np.float64)], {}, [np.empty(3, np.float32)]) is None  # mixed dtypes


def test_causal_mask_kernel_is_the_formula():
    """keep[b, 0, i, j] = j <= positions[i] and mask[b, j] != 0; additive: 0 / masked."""
    mask = np.array([[0, 1, 1, 1, 1], [1, 1, 1, 0, 1]], np.int64)  # left padding, a hole
    pos = np.array([2, 3, 4], np.int64)
    fn = lookup_kernel("fused.causal_mask").fn
    keep = fn([mask, pos], {"dtype": "bool"}, None)[0]
    j, i = np.arange(5)[None, None, None, :], pos[None, None, :, None]
    want = (j <= i) & (mask != 0)[:, None, None, :]
    assert keep.shape == (2, 1, 3, 5) and keep.dtype == bool
    np.testing.assert_array_equal(keep, want)
    out = np.empty((2, 1, 3, 5), np.float32)
    add = fn([mask, pos], {"dtype": "f32", "masked": float("-inf")}, [out])[0]
    assert add is out
    np.testing.assert_array_equal(add, np.where(want, 0, -np.inf).astype(np.float32))


@pytest.mark.parametrize("k,n", [(512, 512), (1408, 512), (9216, 1000)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gemv_path_is_as_accurate_as_blas(k, n, seed):
    """One row times a weight takes the blocked einsum path (`runtime.kernels.matmul.gemv`):
    its error against float64 stays within 3x BLAS's (measured 0.3-2.6x; one sequential sum
    over K = 9216 had 4x, and 1.4e-6 of the largest logit failed the zoo models' 1e-5)."""
    from runtime.kernels.matmul import gemv, gemv_view

    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((1, 1, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    out = np.empty((1, 1, n), np.float32)
    vec = gemv_view(x, w, out)
    assert vec is not None  # the shapes a decode step's projections have
    gemv(vec[0], w, vec[1])
    ref = x.astype(np.float64) @ w.astype(np.float64)
    scale = np.abs(ref).max()
    err, blas_err = np.abs(out - ref).max() / scale, np.abs(x @ w - ref).max() / scale
    assert err <= 3 * blas_err and err < 2e-6, (err, blas_err)
    assert gemv_view(np.ones((2, k), np.float32), w, np.empty((2, n), np.float32)) is None  # two rows: BLAS
