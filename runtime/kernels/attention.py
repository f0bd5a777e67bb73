"""The attention kernel (``fused.attention``, `ir.ops.attention`).

Grouped-query attention without repeating K/V: ``q [B, Hq, S, D]`` is viewed as
``[B, Hkv, g*S, D]`` (``g = Hq / Hkv``; query head ``h`` reads KV head ``h // g``),
so each KV head meets its ``g`` query heads in one batched product:

    scores [B, Hkv, g*S, L] = q' @ kᵀ          (BLAS, f32)
    scores = softmax(scores * scale + mask)    (in place, max-subtracted)
    out    [B, Hkv, g*S, Dv] = scores @ v      (written into the result's view)

The scores live in the session's scratch buffers (nothing allocated per run
once sized).  f16 operands are widened to f32 first and the result rounded once,
as the Cube's f32 accumulator does; no float64 anywhere.

A stored K or V (``kv.attention``: f16, or i8 with one scale per batch, head and
key) is widened tile by tile (`_TILE` elements in one scratch buffer), never
whole; the i8 scales act on the scores instead of the tiles — ``q @ (k·sk)ᵀ =
(q @ kᵀ)·sk`` per key and ``p @ (v·sv) = (p·sv) @ v`` — which costs a multiply
per score rather than per cached element:

    scores = (q' @ k_tileᵀ for each tile) * sk * scale
    out    = Σ (softmax(scores + mask) * sv)[:, tile] @ v_tile
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ir.types import DType
from runtime.kernels import kernel, slot
from runtime.kernels.matmul import acc_dtype, scratch

__all__ = ["attention"]

# scratch keys (distinct within this kernel)
_SCORES, _ROWMAX, _Q, _OUT, _KEEP, _KV_TILE, _PART = 20, 21, 23, 26, 27, 28, 29
# elements of one widened tile of a stored K or V (256 KiB in f32, about one Unified Buffer)
_TILE = 1 << 16


def _widened(x: np.ndarray, attrs: dict[str, Any], key: int, shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
    """`x` viewed as `shape` in `dt` (a scratch copy when it has to be widened)."""
    if x.dtype == dt:
        return x.reshape(shape)
    w = scratch(attrs, key, shape, dt)
    np.copyto(w, x.reshape(shape), casting="unsafe")
    return w


def _view(o: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """`o` reshaped without a copy, or None."""
    v = o.view()
    try:
        v.shape = shape
    except AttributeError:
        return None
    return v


def _mask5(mask: np.ndarray, hkv: int, g: int) -> np.ndarray:
    """An additive mask broadcastable to ``[B, Hq, S, L]`` as ``[B', Hkv|1, g|1, S', L']``."""
    m = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    mb, mh, ms, ml = m.shape
    if mh == 1:
        return m.reshape(mb, 1, 1, ms, ml)
    return m.reshape(mb, hkv, g, ms, ml)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, attrs: dict[str, Any],
              o: np.ndarray | None = None, k_scale: np.ndarray | None = None,
              v_scale: np.ndarray | None = None) -> np.ndarray:
    """``softmax(q @ kᵀ * scale + mask) @ v`` with KV heads shared by ``Hq / Hkv`` query heads;
    int8 `k`/`v` are read as ``k * k_scale[..., None]`` (one scale per batch, head and key)."""
    b, hq, s, d = q.shape
    hkv, length, dv = k.shape[1], k.shape[2], v.shape[3]
    g = hq // hkv
    dt = q.dtype if q.dtype == k.dtype == v.dtype or k_scale is not None else np.result_type(q, k, v)
    acc = acc_dtype(dt)
    shape = (b, hq, s, dv)
    fits = o is not None and o.shape == shape
    direct = None
    if fits and o.dtype == acc:  # type: ignore[union-attr]
        direct = o.reshape(b, hkv, g * s, dv) if o.flags.c_contiguous else _view(o, (b, hkv, g * s, dv))  # type: ignore[union-attr]
    res = direct if direct is not None else scratch(attrs, _OUT, (b, hkv, g * s, dv), acc)
    if length == 0 or res.size == 0:  # an empty softmax row weighs nothing
        res.fill(0)
    else:
        qg = _widened(q, attrs, _Q, (b, hkv, g * s, d), acc)
        p = scratch(attrs, _SCORES, (b, hkv, g * s, length), acc)
        _scores(qg, k, k_scale, p, attrs)
        scale = attrs.get("scale", 1.0)
        if scale != 1.0:
            np.multiply(p, acc.type(scale), out=p)
        if mask is not None or attrs.get("causal", 0):
            _mask_scores(p.reshape(b, hkv, g, s, length), mask, attrs, hkv, g)  # a view: p is contiguous
        _softmax_rows(p, attrs)
        if v_scale is not None:  # p @ (v * v_scale) = (p * v_scale per key) @ v
            np.multiply(p, v_scale[:, :, None, :], out=p, casting="unsafe")
        _weighted(p, v, res, attrs)
    if direct is not None:
        return o  # type: ignore[return-value]
    r = res.reshape(shape)
    if fits:
        np.copyto(o, r, casting="unsafe")  # type: ignore[arg-type]
        return o  # type: ignore[return-value]
    return r.astype(dt)


def _tiles(x: np.ndarray, attrs: dict[str, Any], dt: np.dtype):
    """``(start, tile)`` over `x`'s keys (axis 2): each tile a widened copy of up to
    `_TILE` elements in one scratch buffer of constant size, so a stored K or V is
    never widened whole (as a kernel dequantizes tile by tile into its local buffer)."""
    b, h, length, d = x.shape
    row = b * h * d
    n = max(1, _TILE // max(row, 1))
    buf = scratch(attrs, _KV_TILE, (n * row,), dt)  # one size for every length: sized once
    for j in range(0, length, n):
        m = min(n, length - j)
        t = buf[:m * row].reshape(b, h, m, d)
        np.copyto(t, x[:, :, j:j + m], casting="unsafe")
        yield j, t


def _scores(qg: np.ndarray, k: np.ndarray, k_scale: np.ndarray | None, p: np.ndarray, attrs: dict[str, Any]) -> None:
    """``p = qg @ kᵀ`` (per key times `k_scale`): BLAS on a float `k`, tile by tile on a stored one."""
    if k.dtype == p.dtype:
        np.matmul(qg, k.swapaxes(2, 3), out=p)
    else:
        for j, t in _tiles(k, attrs, p.dtype):
            np.matmul(qg, t.swapaxes(2, 3), out=p[..., j:j + t.shape[2]])
    if k_scale is not None:
        np.multiply(p, k_scale[:, :, None, :], out=p, casting="unsafe")


def _weighted(p: np.ndarray, v: np.ndarray, res: np.ndarray, attrs: dict[str, Any]) -> None:
    """``res = p @ v``: BLAS on a float `v`; on a stored one, the tiles' products summed."""
    if v.dtype == p.dtype:
        np.matmul(p, v, out=res)
        return
    for j, t in _tiles(v, attrs, p.dtype):
        pj = p[..., j:j + t.shape[2]]
        if j == 0:
            np.matmul(pj, t, out=res)
        else:
            part = scratch(attrs, _PART, res.shape, res.dtype)
            np.matmul(pj, t, out=part)
            np.add(res, part, out=res)


def _mask_scores(p5: np.ndarray, mask: np.ndarray | None, attrs: dict[str, Any], hkv: int, g: int) -> None:
    """Add the additive mask and apply the causal one, in place on ``[B, Hkv, g, S, L]`` scores."""
    s, length = p5.shape[3], p5.shape[4]
    if mask is not None:
        np.add(p5, _mask5(mask, hkv, g), out=p5, casting="unsafe")
    if attrs.get("causal", 0):
        for i in range(max(0, s - length), s):  # query i sees keys j <= i + L - S
            p5[..., i, i + length - s + 1:] = -np.inf
        if s > length:  # queries before the first key see none
            p5[..., :s - length, :] = -np.inf


_FLOORS: dict[np.dtype, float] = {}


def _floor(dt: np.dtype) -> float:
    """The dtype's lowest finite value (np.finfo is slow enough to matter per step)."""
    f = _FLOORS.get(dt)
    if f is None:
        f = _FLOORS[dt] = float(-np.finfo(dt).max)
    return f


def _softmax_rows(p: np.ndarray, attrs: dict[str, Any]) -> None:
    """Softmax over the last axis of `p`, in place, allocating nothing.  A row of
    all ``-inf`` gives 0 with ``nan_guard`` and NaN without (ONNX's Softmax)."""
    rows = p.shape[:-1] + (1,)
    both = scratch(attrs, _ROWMAX, (2,) + rows, p.dtype)
    mx, total = both[0], both[1]
    # a finite floor: a fully masked row gives exp(-inf) = 0 rather than exp(-inf + inf) = NaN
    np.maximum.reduce(p, axis=-1, keepdims=True, out=mx, initial=_floor(p.dtype))
    np.subtract(p, mx, out=p)
    np.exp(p, out=p)
    np.add.reduce(p, axis=-1, keepdims=True, out=total)
    if attrs.get("nan_guard", 0):
        np.maximum(total, 1, out=total)  # a row with any key sums to >= 1 (its max gives exp(0)); else 0 / 1 = 0
        np.reciprocal(total, out=total)
        np.multiply(p, total, out=p)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            np.reciprocal(total, out=total)  # 1/0 = inf and 0 * inf = NaN, as ONNX
            np.multiply(p, total, out=p)


@kernel("fused.attention", scratch=True)
def _attention(inputs, attrs, out):
    mask = inputs[3] if len(inputs) > 3 else None
    return [attention(inputs[0], inputs[1], inputs[2], mask, attrs, slot(out, 0))]


@kernel("kv.attention", scratch=True)
def _kv_attention(inputs, attrs, out):
    mask = inputs[3] if len(inputs) > 3 else None
    k_scale, v_scale = (inputs[4], inputs[5]) if len(inputs) > 5 else (None, None)
    return [attention(inputs[0], inputs[1], inputs[2], mask, attrs, slot(out, 0), k_scale, v_scale)]


def causal_mask(mask: np.ndarray, positions: np.ndarray, dtype: np.dtype, masked: float,
                o: np.ndarray | None = None, attrs: dict[str, Any] | None = None) -> np.ndarray:
    """``keep[b, 0, i, j] = j <= positions[i] and mask[b, j] != 0`` as bool, or for a
    float dtype 0 where kept and `masked` elsewhere."""
    b, t = mask.shape
    s = positions.shape[0]
    work = scratch(attrs or {}, _KEEP, (2 * b * s * t + b * t,), np.dtype(bool))
    causal = work[:s * t].reshape(1, 1, s, t)
    np.less_equal(_arange(t)[None, None, None, :], positions.reshape(1, 1, s, 1), out=causal)
    padding = work[s * t:s * t + b * t].reshape(b, 1, 1, t)
    np.not_equal(mask.reshape(b, 1, 1, t), 0, out=padding)
    keep = work[s * t + b * t:s * t + b * t + b * s * t].reshape(b, 1, s, t)
    np.logical_and(causal, padding, out=keep)
    if dtype == bool:
        if o is not None and o.shape == keep.shape and o.dtype == bool:
            np.copyto(o, keep)
            return o
        return keep.copy()
    if o is None or o.shape != keep.shape or o.dtype != dtype:
        o = np.empty(keep.shape, dtype)
    o.fill(masked)
    np.copyto(o, 0, where=keep)
    return o


_ARANGE = [np.arange(0, dtype=np.int64)]


def _arange(n: int) -> np.ndarray:
    """0 .. n-1 as a view of one read-only array that grows by doubling."""
    a = _ARANGE[0]
    if a.shape[0] < n:
        a = np.arange(max(n, 2 * a.shape[0]), dtype=np.int64)
        a.flags.writeable = False
        _ARANGE[0] = a
    return a[:n]


@kernel("fused.causal_mask", scratch=True)
def _causal_mask(inputs, attrs, out):
    dt = np.dtype(bool) if attrs.get("dtype", "bool") == "bool" else DType(attrs["dtype"]).numpy
    return [causal_mask(inputs[0], inputs[1], dt, float(attrs.get("masked", -np.inf)), slot(out, 0), attrs)]
