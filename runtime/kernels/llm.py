"""Vector kernels for the LLM block ops (`ir.ops.llm`): RMSNorm, rotary embedding and
the SiLU-gated MLP's activation.

Each writes its result into the arena view when the shapes match and keeps the math
in the operands' float dtype (RMSNorm and the SiLU reduce or compute in float32
whatever the input); the temporaries are one row-reduction and one buffer from the
session's scratch, never float64, so a decode step allocates next to nothing.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from runtime.kernels import kernel, planner, slot
from runtime.kernels.matmul import scratch

__all__ = ["rms_norm", "rotary", "swiglu"]

# the session's scratch buffers (`runtime.kernels.matmul.Scratch`) these use
_ROTARY, _SWIGLU, _RMS = 30, 31, 32


def rms_norm(x: np.ndarray, w: np.ndarray | None, eps: float, o: np.ndarray | None = None) -> np.ndarray:
    """x / sqrt(mean(x^2, -1) + eps) * w, the mean of squares taken in float32."""
    xs = x if x.dtype == np.float32 else x.astype(np.float32)
    d = x.shape[-1] if x.ndim else 1
    ms = np.einsum("...i,...i->...", xs, xs)[..., None] if x.ndim else xs * xs
    ms *= np.float32(1.0 / max(d, 1))
    ms += np.float32(eps)
    np.sqrt(ms, out=ms)
    np.reciprocal(ms, out=ms)
    if o is None or o.shape != x.shape or o.dtype != x.dtype:
        o = np.empty(x.shape, x.dtype)
    if x.dtype == np.float32:
        np.multiply(x, ms, out=o)
    else:
        o[...] = xs * ms
    if w is None:
        return o
    if np.ndim(w) <= 1:  # [D] or a scalar: broadcasts within o's shape (np.broadcast_shapes allocates)
        return np.multiply(o, w, out=o)
    return np.multiply(o, w)


@kernel("fused.rms_norm", scratch=True)
def _rms_norm(inputs, attrs, out):
    x = inputs[0]
    w = inputs[1] if len(inputs) > 1 else None
    return [rms_norm(x, w, float(attrs.get("epsilon", 1e-6)), slot(out, 0))]


@planner("fused.rms_norm")
def _plan_rms_norm(inputs, attrs, out):
    """`rms_norm` for float32 rows, its row buffer allocated once per plan."""
    x, w, o = inputs[0], inputs[1] if len(inputs) > 1 else None, out[0]
    if x.dtype != np.float32 or x.ndim == 0 or o.shape != x.shape or o.dtype != x.dtype:
        return None
    if w is not None and (np.ndim(w) > 1 or not _fits(np.asarray(w), x.shape)):
        return None
    ms = scratch(attrs, _RMS, x.shape[:-1] + (1,), np.float32)
    ms_rows = ms[..., 0]
    inv_d, eps = np.float32(1.0 / max(x.shape[-1], 1)), np.float32(attrs.get("epsilon", 1e-6))
    if ms.size == 1 and x.flags.c_contiguous:  # one row (a decode step): a dot product, no einsum
        flat, den = x.reshape(-1), ms.reshape(())
        square_sum = partial(np.dot, flat, flat, out=den)
    else:
        den, square_sum = ms, partial(np.einsum, "...i,...i->...", x, x, out=ms_rows)

    def run() -> None:
        square_sum()
        np.multiply(den, inv_d, out=den)
        np.add(den, eps, out=den)
        np.sqrt(den, out=den)
        np.divide(x, den, out=o)
        if w is not None:
            np.multiply(o, w, out=o)
    return run


def _fits(a: np.ndarray, shape: tuple[int, ...]) -> bool:
    """`a` broadcasts to `shape` without growing it (np.broadcast_shapes would allocate)."""
    return a.ndim <= len(shape) and all(d in (1, n) for d, n in zip(a.shape[::-1], shape[::-1]))


def rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool = False,
           o: np.ndarray | None = None, attrs: dict | None = None) -> np.ndarray:
    """x * cos + rotate(x) * sin over the last axis; rotate is rotate_half, or
    rotate_every_two when `interleaved`.  `o` must not alias `x` (the op is not
    elementwise, so the buffer planner never makes it); the one half-width
    temporary comes from the session's scratch (`attrs`)."""
    if o is None or o.shape != x.shape or o.dtype != x.dtype or not (_fits(cos, x.shape) and _fits(sin, x.shape)):
        o = np.multiply(x, cos).astype(x.dtype, copy=False)
    else:
        np.multiply(x, cos, out=o)
    if interleaved:
        x0, x1 = x[..., 0::2], x[..., 1::2]
        s0, s1 = sin[..., 0::2], sin[..., 1::2]
        o0, o1 = o[..., 0::2], o[..., 1::2]
    else:
        h = x.shape[-1] // 2
        x0, x1 = x[..., :h], x[..., h:]
        s0, s1 = sin[..., :h], sin[..., h:]
        o0, o1 = o[..., :h], o[..., h:]
    t = scratch(attrs or {}, _ROTARY, o0.shape, o.dtype)
    np.multiply(x1, s0, out=t)
    np.subtract(o0, t, out=o0)  # y0 = x0 cos0 - x1 sin0
    np.multiply(x0, s1, out=t)
    np.add(o1, t, out=o1)  # y1 = x1 cos1 + x0 sin1
    return o


@kernel("fused.rotary", scratch=True)
def _rotary(inputs, attrs, out):
    x, cos, sin = inputs
    return [rotary(x, cos, sin, bool(attrs.get("interleaved", 0)), slot(out, 0), attrs)]


@planner("fused.rotary")
def _plan_rotary(inputs, attrs, out):
    """`rotary` with its half views and temporary made once per plan."""
    x, cos, sin = inputs
    o = out[0]
    if o.shape != x.shape or o.dtype != x.dtype or not (_fits(cos, x.shape) and _fits(sin, x.shape)):
        return None
    if np.may_share_memory(o, x):
        return None
    if attrs.get("interleaved", 0):
        x0, x1, s0, s1, o0, o1 = x[..., 0::2], x[..., 1::2], sin[..., 0::2], sin[..., 1::2], o[..., 0::2], o[..., 1::2]
    else:
        h = x.shape[-1] // 2
        x0, x1, s0, s1, o0, o1 = x[..., :h], x[..., h:], sin[..., :h], sin[..., h:], o[..., :h], o[..., h:]
    t = scratch(attrs, _ROTARY, o0.shape, o.dtype)

    def run() -> None:
        np.multiply(x, cos, out=o)
        np.multiply(x1, s0, out=t)
        np.subtract(o0, t, out=o0)
        np.multiply(x0, s1, out=t)
        np.add(o1, t, out=o1)
    return run


def swiglu(gate: np.ndarray, up: np.ndarray, o: np.ndarray | None = None, attrs: dict | None = None) -> np.ndarray:
    """gate * sigmoid(gate) * up as gate / (1 + exp(-gate)) * up, in float32 (float16
    operands are widened: exp(-gate) leaves fp16's range below gate = -11).  exp's
    argument is clipped at 80 (exp(80) is finite in float32; the result there is
    below 1e-33 in magnitude either way), so nothing overflows into a warning.  The
    temporary comes from the session's scratch (`attrs`); `o` may alias either
    operand: both are read before the last, elementwise, write."""
    dtype = gate.dtype
    t = scratch(attrs or {}, _SWIGLU, gate.shape, np.float32)
    np.negative(gate, out=t)
    np.minimum(t, np.float32(80), out=t)
    np.exp(t, out=t)
    t += 1
    np.divide(gate, t, out=t)
    if dtype != np.float32:
        return (t * up).astype(dtype)
    if o is None or o.shape != t.shape or not _fits(up, t.shape) or o.dtype != t.dtype:
        return np.multiply(t, up)
    return np.multiply(t, up, out=o)


@kernel("fused.swiglu", scratch=True)
def _swiglu(inputs, attrs, out):
    return [swiglu(inputs[0], inputs[1], slot(out, 0), attrs)]


@planner("fused.swiglu")
def _plan_swiglu(inputs, attrs, out):
    """`swiglu` for float32 operands, its temporary made once per plan."""
    gate, up = inputs
    o = out[0]
    if gate.dtype != np.float32 or o.shape != gate.shape or o.dtype != gate.dtype or not _fits(up, gate.shape):
        return None
    t = scratch(attrs, _SWIGLU, gate.shape, np.float32)
    cap, one = np.float32(80), np.float32(1)

    def run() -> None:
        np.negative(gate, out=t)
        np.minimum(t, cap, out=t)
        np.exp(t, out=t)
        np.add(t, one, out=t)
        np.divide(gate, t, out=t)
        np.multiply(t, up, out=o)
    return run
