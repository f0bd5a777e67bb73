"""Cube kernels: MatMul, Gemm, MatMulInteger and the fused matmul forms, and what
the Cube kernels share (the session's scratch buffers, the f32 accumulator, the
fused activation).  Conv and ConvTranspose are in `runtime.kernels.conv`.

f16 operands are widened to f32 before BLAS and the result is rounded back to
f16 once at the end (after bias and activation), as the Cube accumulates f16
products in its f32 L0C buffer (numpy's own f16 matmul rounds every partial
sum and does not use BLAS).

Tile plans: a Cube op's ``tile = [tm, tn, tk]`` is how the Cube blocks the
product (it drives the cost model and the report).  Float products run here as
one BLAS call, which blocks for the CPU's caches itself: the plan's K order
changes only rounding, and splitting into 256-blocks made the float Cube ops
6-10% slower (resnet50, vgg19).  Integer operands run the plan tile by tile
(``runtime.kernels.tiling.tiled_matmul``): there the K-tile bounds the int32
partial sums, which the plan promises.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np

from runtime.kernels import kernel, planner, slot
from runtime.kernels.elementwise import UNARY_BY_ACT, relu
from runtime.kernels.tiling import tiled_matmul

__all__ = ["Scratch", "acc_dtype", "activate", "matmul", "relu_", "scratch"]


class Scratch:
    """Grow-only work buffers shared by the steps of one session.

    Steps run one at a time, so every step may use buffer ``key`` freely; the
    first run sizes them, later runs allocate nothing.  Not thread-safe (nor is
    the session's arena).
    """

    def __init__(self) -> None:
        self._bufs: dict[int, np.ndarray] = {}

    def get(self, key: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        buf = self._bufs.get(key)
        if buf is None or buf.size < nbytes:
            buf = self._bufs[key] = np.empty(max(nbytes, 64), dtype=np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)

    @property
    def nbytes(self) -> int:
        return sum(b.size for b in self._bufs.values())


def scratch(attrs: dict[str, Any], key: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Work buffer `key` from the session's `Scratch` (``attrs["_scratch"]``), or a
    fresh array when the kernel runs outside a session."""
    s = attrs.get("_scratch")
    if s is None:
        return np.empty(shape, dtype)
    return s.get(key, shape, dtype)


def acc_dtype(dt: np.dtype) -> np.dtype:
    """The dtype BLAS runs in: f16 widens to f32 (the Cube's f32 accumulator)."""
    return np.dtype(np.float32) if dt == np.float16 else dt


def matmul(a: np.ndarray, b: np.ndarray, attrs: dict[str, Any], o: np.ndarray | None = None,
           epilogue: Any = None) -> np.ndarray:
    """a @ b (ONNX MatMul = numpy matmul) following the op's tile plan.

    `epilogue(r)` (bias, activation) runs in place on the accumulator before an
    f16 result is rounded; the result is written into `o` when it fits.
    """
    dt = np.result_type(a, b)
    tile = attrs.get("tile")
    if dt.kind not in "fc":  # integers: the exact tile loop / numpy's integer matmul
        if tile and a.ndim >= 2 and b.ndim >= 2:
            r = np.asarray(tiled_matmul(a, b, list(tile)))
        else:
            r = np.matmul(a, b)
        if epilogue is not None:
            r = epilogue(r)
        if o is not None and o.shape == r.shape:
            np.copyto(o, r, casting="unsafe")
            return o
        return r
    acc_dt = acc_dtype(dt)
    sq_a, sq_b = a.ndim == 1, b.ndim == 1
    a2 = a[None, :] if sq_a else a
    b2 = b[:, None] if sq_b else b
    full = (*np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]), a2.shape[-2], b2.shape[-1])
    shape = full[:-2] + full[-2:-1] * (not sq_a) + full[-1:] * (not sq_b)
    if a2.dtype != acc_dt:
        a2 = a2.astype(acc_dt)
    if b2.dtype != acc_dt:
        b2 = b2.astype(acc_dt)
    fits = o is not None and o.shape == shape
    direct = fits and o.dtype == acc_dt
    if direct:  # o viewed with the squeezed 1-D dims restored (always a view)
        r = o
        if sq_a:
            r = np.expand_dims(r, -2)
        if sq_b:
            r = np.expand_dims(r, -1)
    elif acc_dt != dt:
        r = scratch(attrs, 2, full, acc_dt)
    else:
        r = np.empty(full, acc_dt)
    np.matmul(a2, b2, out=r)
    if sq_b:  # back to the result's shape (views)
        r = r[..., 0]
    if sq_a:
        r = r[..., 0, :]
    if epilogue is not None:
        epilogue(r)
    if direct:
        return o
    if fits:
        np.copyto(o, r, casting="unsafe")
        return o
    return r.astype(dt) if r.dtype != dt else r


@kernel("MatMul", scratch=True)
def _matmul(inputs, attrs, out):
    return [matmul(inputs[0], inputs[1], attrs, slot(out, 0))]


@planner("MatMul")
def _plan_matmul(inputs, attrs, out):
    """``np.matmul(a, b, out=o)`` bound, for float operands of the result's dtype with
    no 1-D operand (what `matmul` does for them, without its checks per run)."""
    a, b, o = inputs[0], inputs[1], out[0]
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.ndim < 2 or b.ndim < 2:
        return None
    if not (a.dtype == b.dtype == o.dtype) or a.dtype.kind != "f" or a.dtype == np.float16:
        return None
    if o.shape != (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1]):
        return None
    return partial(np.matmul, a, b, out=o)


@kernel("MatMulInteger")
def _matmul_integer(inputs, attrs, out):
    a, b = inputs[0], inputs[1]
    azp = inputs[2] if len(inputs) > 2 else None
    bzp = inputs[3] if len(inputs) > 3 else None
    # float64 products of 8-bit values summed exactly (|sum| < 2^53) -> BLAS speed
    af = a.astype(np.float64)
    bf = b.astype(np.float64)
    if azp is not None:
        af -= azp.astype(np.float64).reshape(-1, 1) if azp.ndim == 1 and azp.size > 1 else azp.astype(np.float64)
    if bzp is not None:
        bf -= bzp.astype(np.float64)
    return [matmul(af, bf, attrs).astype(np.int32)]


def _epilogue(r: np.ndarray, bias: np.ndarray | None, act: str, beta: float = 1.0) -> np.ndarray:
    if bias is not None:
        if beta == 1.0:
            np.add(r, bias, out=r, casting="unsafe")
        elif beta != 0.0:
            np.add(r, bias * r.dtype.type(beta), out=r, casting="unsafe")
    return activate(r, act)


def relu_(r: np.ndarray) -> np.ndarray:
    """max(r, 0) in place (`runtime.kernels.elementwise.relu`)."""
    return relu(r, r)


def activate(r: np.ndarray, act: str | None) -> np.ndarray:
    """The fused activation `act` applied to `r` in place."""
    act = (act or "none").lower()
    if act == "none":
        return r
    if act == "relu":
        return relu_(r)
    fn = UNARY_BY_ACT.get(act)
    if fn is None:
        raise NotImplementedError(f"fused activation {act!r} has no kernel")
    r[...] = fn(r)
    return r


@kernel("Gemm", scratch=True)
def _gemm(inputs, attrs, out):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    alpha = float(attrs.get("alpha", 1.0))
    beta = float(attrs.get("beta", 1.0))

    def epi(r: np.ndarray) -> np.ndarray:
        if alpha != 1.0:
            r *= r.dtype.type(alpha)
        return _epilogue(r, c, "none", beta)

    return [matmul(a, b, attrs, slot(out, 0), epi)]


@kernel("fused.matmul_add_relu", scratch=True)
def _fused_mar(inputs, attrs, out):
    act = attrs.get("act") or "relu"
    return [matmul(inputs[0], inputs[1], attrs, slot(out, 0), lambda r: _epilogue(r, inputs[2], act))]


@kernel("fused.matmul_add", scratch=True)
def _fused_ma(inputs, attrs, out):
    act = attrs.get("act") or "none"
    return [matmul(inputs[0], inputs[1], attrs, slot(out, 0), lambda r: _epilogue(r, inputs[2], act))]


@kernel("fused.matmul_relu", scratch=True)
def _fused_mr(inputs, attrs, out):
    act = attrs.get("act") or "relu"
    return [matmul(inputs[0], inputs[1], attrs, slot(out, 0), lambda r: activate(r, act))]


