"""Reductions, ArgMax/ArgMin, Softmax family, normalizations, LRN and pools.

Pools are separable: one spatial axis at a time, each of that axis's taps one
strided whole-tensor ufunc — never a loop over pixels.  Padding follows ONNX: max pools pad
with -inf; average pools count padded cells only with ``count_include_pad``,
and never count the extra cells ``ceil_mode`` adds past the padded input.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ir.geometry import window_out
from runtime.kernels import kernel, planner, slot
from runtime.kernels.conv import conv_pads
from runtime.kernels.matmul import scratch

__all__ = ["pool", "reduce_axes"]


def reduce_axes(x: np.ndarray, inputs: list[Any], attrs: dict[str, Any]) -> tuple[int, ...] | None:
    """The axes to reduce (None: identity, for noop_with_empty_axes)."""
    axes = attrs.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = [int(a) for a in np.asarray(inputs[1]).reshape(-1)]
    if axes is None or len(axes) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return None
        return tuple(range(x.ndim))
    return tuple(sorted(int(a) % max(x.ndim, 1) for a in axes))


def _reducer(name: str, fn) -> None:
    @kernel(name)
    def k(inputs, attrs, out, fn=fn):
        x = inputs[0]
        axes = reduce_axes(x, inputs, attrs)
        if axes is None:
            return [x]
        keep = bool(attrs.get("keepdims", 1))
        return [np.asarray(fn(x, axes, keep)).astype(x.dtype, copy=False)]


def _logsumexp(x, axes, keep):
    m = _max(x, axes, True)
    m = np.where(np.isfinite(m), m, 0)
    r = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return r if keep else np.squeeze(r, axis=axes)


def _lowest(dt: np.dtype):
    if dt.kind == "f":
        return -np.inf
    return False if dt.kind == "b" else np.iinfo(dt).min


def _highest(dt: np.dtype):
    if dt.kind == "f":
        return np.inf
    return True if dt.kind == "b" else np.iinfo(dt).max


def _max(x, axes, keep):
    # ONNX: the max of an empty set is the lowest value of the type (-inf), the min the highest
    if x.size == 0:
        return np.max(x, axis=axes, keepdims=keep, initial=_lowest(x.dtype))
    return np.max(x, axis=axes, keepdims=keep)


def _min(x, axes, keep):
    if x.size == 0:
        return np.min(x, axis=axes, keepdims=keep, initial=_highest(x.dtype))
    return np.min(x, axis=axes, keepdims=keep)


def _mean(x, axes, keep):
    if x.dtype.kind in "iu":
        return np.sum(x, axis=axes, keepdims=keep) // max(int(np.prod([x.shape[a] for a in axes])), 1)
    return np.mean(x, axis=axes, keepdims=keep)


_reducer("ReduceSum", lambda x, a, k: np.sum(x, axis=a, keepdims=k))
_reducer("ReduceMean", _mean)
_reducer("ReduceMax", _max)
_reducer("ReduceMin", _min)
_reducer("ReduceProd", lambda x, a, k: np.prod(x, axis=a, keepdims=k))
_reducer("ReduceL1", lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k))
_reducer("ReduceL2", lambda x, a, k: np.sqrt(np.sum(np.square(x), axis=a, keepdims=k)))
_reducer("ReduceLogSum", lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)))
_reducer("ReduceLogSumExp", _logsumexp)
_reducer("ReduceSumSquare", lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k))


def _arg(name: str, fn) -> None:
    @kernel(name)
    def k(inputs, attrs, out, fn=fn):
        x = inputs[0]
        axis = int(attrs.get("axis", 0)) % max(x.ndim, 1)
        if attrs.get("select_last_index", 0):
            r = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            r = fn(x, axis=axis)
        r = r.astype(np.int64)
        return [np.expand_dims(r, axis) if attrs.get("keepdims", 1) else r]


_arg("ArgMax", np.argmax)
_arg("ArgMin", np.argmin)


# --- softmax family ---------------------------------------------------------------------
def _softmax_axes(x: np.ndarray, attrs: dict[str, Any]) -> tuple[np.ndarray, int, tuple[int, ...] | None]:
    """Before opset 13 Softmax works on the input coerced to 2-D at `axis`."""
    opset = attrs.get("_opset")
    axis = int(attrs.get("axis", -1 if opset is None or opset >= 13 else 1)) % max(x.ndim, 1)
    if opset is not None and opset < 13:
        shape = x.shape
        return x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1), 1, shape
    return x, axis, None


@kernel("Softmax")
def _softmax(inputs, attrs, out):
    x, axis, back = _softmax_axes(inputs[0], attrs)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return [e if back is None else e.reshape(back)]


@kernel("LogSoftmax")
def _log_softmax(inputs, attrs, out):
    x, axis, back = _softmax_axes(inputs[0], attrs)
    z = x - np.max(x, axis=axis, keepdims=True)
    r = z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
    return [r if back is None else r.reshape(back)]


# --- normalization --------------------------------------------------------------------------
@kernel("BatchNormalization", accepts=lambda attrs, dt: not attrs.get("training_mode", 0))
def _batchnorm(inputs, attrs, out):
    x, scale, bias, mean, var = inputs[:5]
    eps = float(attrs.get("epsilon", 1e-5))
    a = (scale / np.sqrt(var + var.dtype.type(eps))).astype(x.dtype)
    b = (bias - mean * a).astype(x.dtype)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    o = slot(out, 0)
    o = o if o is not None and o.shape == x.shape and o.dtype == x.dtype else None
    r = np.multiply(x, a.reshape(shape), out=o)
    r += b.reshape(shape)
    return [r]


@kernel("InstanceNormalization")
def _instnorm(inputs, attrs, out):
    x, scale, bias = inputs
    eps = float(attrs.get("epsilon", 1e-5))
    axes = tuple(range(2, x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean(np.square(x - mean), axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    r = (x - mean) / np.sqrt(var + eps) * scale.reshape(shape) + bias.reshape(shape)
    return [r.astype(x.dtype, copy=False)]


@kernel("LayerNormalization", scratch=True)
def _layernorm(inputs, attrs, out):
    """Normalized over axes [axis, rank) as rows: statistics in float32 (stash_type 1), the
    centred rows computed straight into the arena view and scaled there; the only
    temporaries are the per-row mean and 1 / std."""
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axis = int(attrs.get("axis", -1)) % x.ndim
    eps = float(attrs.get("epsilon", 1e-5))
    stash = np.dtype(np.float32) if attrs.get("stash_type", 1) == 1 else x.dtype
    n = int(np.prod(x.shape[axis:]))
    stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
    rows = x.astype(stash, copy=False).reshape(-1, n)
    mean = rows.mean(axis=1, keepdims=True)
    o = slot(out, 0)
    if o is not None and o.shape == x.shape and o.dtype == stash and o.flags.c_contiguous and n:
        d = np.subtract(rows, mean, out=o.reshape(-1, n))
    else:
        o, d = None, np.subtract(rows, mean)
    inv = np.einsum("ij,ij->i", d, d)[:, None] if n else np.zeros_like(mean)
    inv *= stash.type(1 / max(n, 1))
    inv += stash.type(eps)
    np.sqrt(inv, out=inv)
    np.reciprocal(inv, out=inv)
    d *= inv
    y = o if o is not None else d.reshape(x.shape)
    if y.dtype != x.dtype:
        y = y.astype(x.dtype)
    y *= scale
    if bias is not None:
        y += bias
    return [y, mean.reshape(stat_shape), inv.reshape(stat_shape)]


_LN_STATS = 36  # the session scratch buffer of the planned LayerNormalization


@planner("LayerNormalization")
def _plan_layernorm(inputs, attrs, out):
    """The float32 single-result case of `_layernorm`, its row statistics allocated once."""
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    o = out[0]
    if len(out) != 1 or x.dtype != np.float32 or o.dtype != x.dtype or o.shape != x.shape or x.ndim == 0:
        return None
    if not (x.flags.c_contiguous and o.flags.c_contiguous) or np.may_share_memory(x, o):
        return None
    axis = int(attrs.get("axis", -1)) % x.ndim
    n = int(np.prod(x.shape[axis:]))
    if n == 0:
        return None
    rows, orows = x.reshape(-1, n), o.reshape(-1, n)
    stats = scratch(attrs, _LN_STATS, (2, rows.shape[0], 1), np.float32)
    mean, inv = stats[0], stats[1]
    inv_rows = inv[:, 0]
    inv_n, eps = np.float32(1 / n), np.float32(attrs.get("epsilon", 1e-5))

    def run() -> None:
        np.add.reduce(rows, axis=1, keepdims=True, out=mean)
        np.multiply(mean, inv_n, out=mean)
        np.subtract(rows, mean, out=orows)
        np.einsum("ij,ij->i", orows, orows, out=inv_rows)
        np.multiply(inv, inv_n, out=inv)
        np.add(inv, eps, out=inv)
        np.sqrt(inv, out=inv)
        np.divide(orows, inv, out=orows)
        np.multiply(o, scale, out=o)
        if bias is not None:
            np.add(o, bias, out=o)
    return run


@kernel("LRN")
def _lrn(inputs, attrs, out):
    x = inputs[0]
    size = int(attrs["size"])
    alpha, beta, bias = float(attrs.get("alpha", 1e-4)), float(attrs.get("beta", 0.75)), float(attrs.get("bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.square(x)
    c = x.shape[1]
    pad = [(0, 0)] * x.ndim
    pad[1] = (lo + 1, hi)
    cs = np.cumsum(np.pad(sq, pad), axis=1)
    idx = np.arange(c)
    s = np.take(cs, idx + lo + hi + 1, axis=1) - np.take(cs, idx, axis=1)
    return [(x / (bias + (alpha / size) * s) ** beta).astype(x.dtype, copy=False)]


# --- pools ------------------------------------------------------------------------------------
def pool(x: np.ndarray, attrs: dict[str, Any], kind: str) -> np.ndarray:
    nsp = x.ndim - 2
    k = list(attrs["kernel_shape"])
    sp = x.shape[2:]
    s, d, p = conv_pads(attrs, sp, k)
    ceil = bool(attrs.get("ceil_mode", 0))
    osz = [window_out(sp[i], k[i], s[i], d[i], p[i], p[i + nsp], ceil) for i in range(nsp)]
    # pad: begin pads, then end pads plus whatever ceil_mode windows reach past them
    ext = [max((osz[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - sp[i] - p[i], p[i + nsp]) for i in range(nsp)]
    fill = -np.inf if kind == "max" else 0
    if x.dtype.kind != "f" and kind == "max":
        fill = np.iinfo(x.dtype).min
    shape = x.shape[:2] + tuple(sp[i] + p[i] + ext[i] for i in range(nsp))
    if any(p) or any(ext):
        xp = np.full(shape, fill, dtype=x.dtype)
        xp[(slice(None), slice(None), *(slice(p[i], p[i] + sp[i]) for i in range(nsp)))] = x
    else:
        xp = x
    # a box window is separable: pool along one spatial axis at a time (with its
    # stride), k0 + k1 taps instead of k0 * k1, each pass over a smaller array
    res = xp
    for i in range(nsp):
        pre = (slice(None),) * (2 + i)
        acc = None
        for t in range(k[i]):
            v = res[(*pre, slice(t * d[i], t * d[i] + (osz[i] - 1) * s[i] + 1, s[i]))]
            if acc is None:
                acc = np.array(v, copy=True)
            elif kind == "max":
                np.maximum(acc, v, out=acc)
            else:
                acc += v
        res = acc
    if kind == "avg":
        res /= _avg_counts(tuple(sp), tuple(k), tuple(s), tuple(d), tuple(p), tuple(osz),
                           bool(attrs.get("count_include_pad", 0)), res.dtype.str)
    return res


@functools.lru_cache(maxsize=256)
def _avg_counts(sp, k, s, d, p, osz, include_pad: bool, dtype: str) -> np.ndarray | float:
    """Cells per window that count: inside the input (or inside the padding too with
    count_include_pad), a product of per-axis counts; a scalar when all are equal."""
    nsp = len(sp)
    per_axis = []
    for i in range(nsp):
        lo, hi = (0, sp[i] + p[i] + p[i + nsp]) if include_pad else (p[i], p[i] + sp[i])
        start = np.arange(osz[i]) * s[i]
        taps = start[:, None] + np.arange(k[i])[None, :] * d[i]
        per_axis.append(((taps >= lo) & (taps < hi)).sum(axis=1))
    cnt = np.ones((), np.float64)
    for i, c in enumerate(per_axis):
        cnt = cnt[..., None] * np.maximum(c, 1).reshape((1,) * i + (-1,))
    if cnt.size and (cnt == cnt.flat[0]).all():
        return float(cnt.flat[0])
    cnt = cnt.astype(dtype)
    cnt.flags.writeable = False
    return cnt


@kernel("MaxPool", accepts=lambda attrs, dt: attrs.get("_n_outputs", 1) == 1 and not attrs.get("storage_order", 0))
def _maxpool(inputs, attrs, out):
    return [pool(inputs[0], attrs, "max")]


@kernel("AveragePool")
def _avgpool(inputs, attrs, out):
    return [pool(inputs[0], attrs, "avg")]


@kernel("GlobalAveragePool")
def _gap(inputs, attrs, out):
    x = inputs[0]
    return [np.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)]


@kernel("GlobalMaxPool")
def _gmp(inputs, attrs, out):
    x = inputs[0]
    return [np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)]
