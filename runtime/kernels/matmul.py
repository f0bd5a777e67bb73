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
from runtime.kernels.activations import apply_act
from runtime.kernels.elementwise import UNARY_BY_ACT, relu
from runtime.kernels.tiling import tiled_matmul

__all__ = ["Scratch", "acc_dtype", "activate", "matmul", "relu_", "scratch"]


class Scratch:
    """Grow-only work buffers shared by the steps of one run state (`runtime.run_state`).

    Steps run one at a time, so every step may use buffer ``key`` freely; the
    first run sizes them, later runs allocate nothing.  Not thread-safe: each of
    a session's run states has its own, as it has its own arena.
    """

    def __init__(self) -> None:
        self._bufs: dict[int, np.ndarray] = {}

    def get(self, key: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        buf = self._bufs.get(key)
        if buf is None or buf.size < nbytes:
            # grown by half at least: a buffer that tracks a growing length (a decode step's
            # attention scores, one key more each step) is reallocated O(log L) times, not every step
            grow = 0 if buf is None else buf.size + buf.size // 2
            buf = self._bufs[key] = np.empty(max(nbytes, grow, 64), dtype=np.uint8)
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


# A vector times a weight (a decode step's projections): numpy's einsum streams the weight
# row by row (out += x[k] * W[k, :]) at the memory's bandwidth, where BLAS's gemv for
# N <= 1024 reached about 60% of it (cold, f32: 1408x512 119 us against 188, 512x512 41
# against 69, 512x3072 199 against 237); from N = 3584 (14 KB accumulating rows) BLAS
# wins.  Small products stay with BLAS too (call overhead).  The rows go in blocks of
# GEMV_BLOCK whose partial sums are added: one sequential sum over K = 9216 had 4x BLAS's
# error; blocks of 256 have 0.3-2.6x BLAS's (at most ~1e-6 of the largest output against
# float64), for about 5-10% of the einsum's speed.
GEMV_MAX_N = 3072
GEMV_MIN_ELEMENTS = 1 << 15
GEMV_BLOCK = 256


def gemv(x: np.ndarray, w: np.ndarray, out: np.ndarray, tmp: np.ndarray | None = None) -> np.ndarray:
    """``out = x @ w`` for x [K], w [K, N], out [N] (float32), by blocks of GEMV_BLOCK rows."""
    k = x.shape[0]
    np.einsum("k,kn->n", x[:GEMV_BLOCK], w[:GEMV_BLOCK], out=out)
    if k > GEMV_BLOCK:
        t = np.empty_like(out) if tmp is None else tmp
        for j in range(GEMV_BLOCK, k, GEMV_BLOCK):
            np.einsum("k,kn->n", x[j:j + GEMV_BLOCK], w[j:j + GEMV_BLOCK], out=t)
            np.add(out, t, out=out)
    return out


def gemv_view(a: np.ndarray, b: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(x [K], out [N]) views for ``o = a @ b`` when `a` is one float32 row and `b` a 2-D
    weight that the einsum path suits; None otherwise."""
    if b.ndim != 2 or a.dtype != np.float32 or b.dtype != np.float32 or o.dtype != np.float32:
        return None
    k, n = b.shape
    if n > GEMV_MAX_N or k * n < GEMV_MIN_ELEMENTS or a.size != k or o.size != n or not b.flags.c_contiguous:
        return None
    if not (a.flags.c_contiguous and o.flags.c_contiguous):
        return None
    return a.reshape(k), o.reshape(n)


def rows_view(a: np.ndarray, b: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, out) for ``np.matmul(a, b, out=o)``, with a stacked `a` [..., M, K] times a 2-D
    `b` collapsed into one [(...)M, K] x [K, N] product when `a` and `o` are C-contiguous.

    numpy runs a stacked product as one small GEMM per matrix of the stack, and with a
    stack of one and ``out=`` it took 80 ms for a [1, 49, 3072] x [3072, 768] product
    that is 6.6 ms as one [49, 3072] GEMM (swin_t's MLP); [64, 49, 96] x [96, 384]: 13.9
    against 7.0 ms."""
    if b.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous and o.flags.c_contiguous \
            and o.shape[:-1] == a.shape[:-1]:
        return a.reshape(-1, a.shape[-1]), b, o.reshape(-1, o.shape[-1])
    return a, b, o


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
    vec = gemv_view(a2, b2, r) if r.ndim >= 2 and r.shape[-2] == 1 else None
    if vec is not None:
        gemv(vec[0], b2, vec[1])
    else:
        x, w, y = rows_view(a2, b2, r)
        np.matmul(x, w, out=y)
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
    vec = gemv_view(a, b, o)
    if vec is not None:
        if b.shape[0] <= GEMV_BLOCK:
            return partial(np.einsum, "k,kn->n", vec[0], b, out=vec[1])
        return partial(gemv, vec[0], b, vec[1], scratch(attrs, 37, (b.shape[1],), np.float32))
    a, b, o = rows_view(a, b, o)
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
    if apply_act(r, act) is not None:
        return r
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


