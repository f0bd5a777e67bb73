"""Vector kernels for Resize (opset 11+) and Upsample (integer nearest scales).

Resize is separable: along each resized axis every output position reads ``k``
input positions (nearest 1, linear 2, cubic 4) with weights that depend only on
the axis' sizes, the scale and the attributes -- ONNX's coordinate transform
(``half_pixel``, ``half_pixel_symmetric``, ``pytorch_half_pixel``,
``align_corners``, ``asymmetric``, ``tf_half_pixel_for_nn``), its nearest
rounding modes and cubic coefficients (``cubic_coeff_a``, ``exclude_outside``),
with out-of-range neighbours clamped to the edge; coordinates in float32 as
onnxruntime computes them, so nearest ties round alike.
An axis plan is (indices ``[n_out, k]``, weights ``[n_out, k]``), cached per
geometry.

- nearest: one gather (``np.take``) per resized axis -- exact, NaN stays where it was;
- linear and cubic on finite float input: the plan as a dense ``[n_out, n_in]``
  interpolation matrix and one BLAS product per axis (an 8x bilinear upsample of a
  [21, 28, 28] map is two small GEMMs); input with inf or NaN takes the gather
  form, so a non-finite value only reaches the outputs that read it.

Declined (the AICPU fallback runs them): ``antialias``, ``tf_crop_and_resize``,
``keep_aspect_ratio_policy`` other than ``stretch``, opset-10 Resize, non-integer
or non-nearest Upsample, non-float data for linear/cubic.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from runtime.kernels import kernel, slot

__all__ = ["axis_plan", "resize"]

_CTMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
         "tf_half_pixel_for_nn")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _s(attrs: dict[str, Any], k: str, default: str) -> str:
    v = attrs.get(k)
    v = v.decode() if isinstance(v, bytes) else v
    return default if v in (None, "") else str(v)


def _source(n_in: int, n_out: int, scale: float, ctm: str) -> np.ndarray:
    """Each output position's coordinate in the input (ONNX's coordinate_transformation_mode),
    computed in float32 in onnxruntime's order of operations: a nearest pick at a tie
    (x = k + 0.5, or x = k) must round as onnxruntime's does."""
    f = np.float32
    x = np.arange(n_out, dtype=f)
    s, half = f(scale), f(0.5)
    if ctm == "asymmetric":
        r = x / s
    elif ctm == "align_corners":  # the spec's lengths: the integer output size
        r = np.zeros(n_out, f) if n_out == 1 else x * f(n_in - 1) / f(n_out - 1)
    elif ctm == "pytorch_half_pixel":
        r = (x + half) / s - half if n_out > 1 else np.zeros(n_out, f)
    elif ctm == "tf_half_pixel_for_nn":
        r = (x + half) / s
    elif ctm == "half_pixel_symmetric":
        adjustment = f(n_out) / (s * f(n_in))
        offset = f(n_in) / f(2) * (f(1) - adjustment)
        r = offset + (x + half) / s - half
    else:  # half_pixel
        r = (x + half) / s - half
    return r.astype(np.float64)


def _cubic(r: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution weights of the four neighbours floor(x)-1 .. floor(x)+2."""
    s = 1 - r
    return np.stack([((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                     ((a + 2) * r - (a + 3)) * r * r + 1,
                     ((a + 2) * s - (a + 3)) * s * s + 1,
                     ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a], axis=1)


@functools.lru_cache(maxsize=512)
def axis_plan(n_in: int, n_out: int, scale: float, mode: str, ctm: str, nearest: str, cubic_a: float,
              exclude_outside: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices [n_out, k], float64 weights [n_out, k]) for one resized axis."""
    x = _source(n_in, n_out, scale, ctm)
    i = np.floor(x)
    r = x - i
    i = i.astype(np.int64)
    if mode == "nearest":
        if nearest == "round_prefer_floor":  # a tie (k + 0.5) goes down, else to the nearest
            idx = np.where(r <= 0.5, i, i + 1)
        elif nearest == "round_prefer_ceil":  # std::round: ties away from zero
            idx = np.where((r < 0.5) | ((r == 0.5) & (x < 0)), i, i + 1)
        elif nearest == "ceil":
            idx = np.ceil(x).astype(np.int64)
        else:
            idx = i
        return np.clip(idx, 0, n_in - 1)[:, None], np.ones((n_out, 1))
    if mode == "linear":
        idx, w = np.stack([i, i + 1], axis=1), np.stack([1 - r, r], axis=1)
    else:
        idx, w = i[:, None] + np.arange(-1, 3), _cubic(r, cubic_a)
        if exclude_outside:
            w = np.where((idx >= 0) & (idx < n_in), w, 0.0)
            w = w / w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, n_in - 1), w


def _matrix(idx: np.ndarray, w: np.ndarray, n_in: int, dtype: np.dtype) -> np.ndarray:
    m = np.zeros((idx.shape[0], n_in), np.float64)
    np.add.at(m, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), w.ravel())
    return m.astype(dtype)


def _along(x: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray, dense: bool) -> np.ndarray:
    if idx.shape[1] == 1:
        return np.take(x, idx[:, 0], axis=axis)
    if dense:  # [.., n_in, ..] -> [.., n_out, ..] as one product with the interpolation matrix
        m = _matrix(idx, w, x.shape[axis], x.dtype)
        moved = np.moveaxis(x, axis, -1)
        return np.moveaxis(moved @ m.T, -1, axis)
    shape = [1] * x.ndim
    shape[axis] = idx.shape[0]
    acc = None
    for k in range(idx.shape[1]):
        term = np.take(x, idx[:, k], axis=axis) * w[:, k].astype(x.dtype).reshape(shape)
        acc = term if acc is None else np.add(acc, term, out=acc)
    return acc


def resize(x: np.ndarray, out_shape: tuple[int, ...], scales: list[float], attrs: dict[str, Any]) -> np.ndarray:
    """`x` resized to `out_shape`; `scales[d]` is the scale the coordinate transform uses."""
    mode = _s(attrs, "mode", "nearest")
    ctm = _s(attrs, "coordinate_transformation_mode", "half_pixel")
    nearest = _s(attrs, "nearest_mode", "round_prefer_floor")
    a = float(attrs.get("cubic_coeff_a", -0.75) if attrs.get("cubic_coeff_a") is not None else -0.75)
    excl = bool(attrs.get("exclude_outside") or 0)
    dense = mode != "nearest" and bool(np.isfinite(x).all())
    r = x
    for d, n_out in enumerate(out_shape):
        if n_out == x.shape[d] and scales[d] == 1.0:
            continue
        idx, w = axis_plan(x.shape[d], n_out, float(scales[d]), mode, ctm, nearest, a, excl)
        r = _along(r, d, idx, w, dense)
    return r


def _accepts(attrs: dict[str, Any], dtypes: list[Any]) -> bool:
    if int(attrs.get("_opset") or 11) < 11 or attrs.get("antialias"):
        return False
    mode = _s(attrs, "mode", "nearest")
    if mode not in ("nearest", "linear", "cubic") or _s(attrs, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return False
    if _s(attrs, "coordinate_transformation_mode", "half_pixel") not in _CTMS:
        return False
    if mode == "nearest" and _s(attrs, "nearest_mode", "round_prefer_floor") not in _NEAREST:
        return False
    return mode == "nearest" or (bool(dtypes) and dtypes[0] in ("f16", "f32", "f64"))  # IR dtype names


def _sizes_and_scales(x: np.ndarray, scales: Any, sizes: Any, axes: Any) -> tuple[tuple[int, ...], list[float]]:
    rank = x.ndim
    axes = [a % rank for a in (axes if axes is not None else range(rank))]
    out, sc = list(x.shape), [1.0] * rank
    if sizes is not None and np.asarray(sizes).size:
        for a, n in zip(axes, np.asarray(sizes).astype(np.int64).tolist()):
            out[a], sc[a] = int(n), n / x.shape[a] if x.shape[a] else 1.0
    else:
        for a, s in zip(axes, np.asarray(scales, dtype=np.float64).tolist()):
            out[a], sc[a] = math.floor(x.shape[a] * s), float(s)
    return tuple(out), sc


@kernel("Resize", accepts=_accepts)
def _resize_k(inputs, attrs, out):
    x = inputs[0]
    scales = inputs[2] if len(inputs) > 2 else None
    sizes = inputs[3] if len(inputs) > 3 else None
    shape, sc = _sizes_and_scales(x, scales, sizes, attrs.get("axes"))
    r = resize(x, shape, sc, attrs)
    o = slot(out, 0)
    if o is not None and o.shape == r.shape and o.dtype == x.dtype:
        np.copyto(o, r, casting="unsafe")
        return [o]
    return [r.astype(x.dtype, copy=False)]


def _upsample_accepts(attrs: dict[str, Any], dtypes: list[Any]) -> bool:
    return _s(attrs, "mode", "nearest") == "nearest"


@kernel("Upsample", accepts=_upsample_accepts)
def _upsample_k(inputs, attrs, out):
    x = inputs[0]
    scales = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("scales")
    s = np.asarray(scales, dtype=np.float64)
    if s.shape != (x.ndim,) or not np.all(s == np.round(s)) or np.any(s < 1):
        from runtime.errors import RuntimeFailure

        raise RuntimeFailure(f"Upsample: scales {s.tolist()} are not positive integers, one per axis")
    r = x
    for axis, k in enumerate(s.astype(np.int64).tolist()):
        if k != 1:
            r = np.repeat(r, k, axis=axis)
    return [r]
