"""Tile-by-tile matmul: how the Cube runs a MatMul the tile pass split.

The tile pass annotates a Cube op with ``tile = [tm, tn, tk]``; the runtime's Cube
kernels call ``tiled_matmul(a, b, tile)`` with ``a: [..., M, K]`` and
``b: [..., K, N]`` (leading dims broadcast as in ``np.matmul``).  Each
``tm x tn`` output block is accumulated over ``ceil(K / tk)`` K-tiles, one BLAS
call per block, as the Cube accumulates partial products in L0C.  Tails are
ragged: the last tile along a dim is simply shorter (the hardware pads it to a
fractal; padding with zeros changes no result, so the interpreter skips it).

Integer inputs (i8/u8, the INT8 Cube path): each K-tile's products are summed by
float32 BLAS, which is exact while every partial sum stays an integer of
magnitude at most 2**24.  With ``tk * max|a| * max|b| <= 2**24`` (for int8,
``256 * 127 * 127 < 2**24``; the bound holds up to tk = 1024 at |x| <= 128) each
K-tile's float32 result is exact; it is converted to int32 and accumulated in
int32, so the whole product is exact for any K.  If a caller's ``tk`` is larger
than the exact bound, it is split further here.  Wider integers fall back to
int64 numpy matmul per block.

Float inputs accumulate in float32 (float64 stays float64); f16 results are
rounded once at the end, like the Cube's f32 L0C accumulator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["exact_int_k", "tiled_matmul"]

_F32_EXACT = 1 << 24


def exact_int_k(a_dtype: np.dtype, b_dtype: np.dtype) -> int:
    """The largest K-tile whose int products sum exactly in float32."""
    amax = max(abs(int(np.iinfo(a_dtype).min)), int(np.iinfo(a_dtype).max))
    bmax = max(abs(int(np.iinfo(b_dtype).min)), int(np.iinfo(b_dtype).max))
    return max(1, _F32_EXACT // (amax * bmax))


def _promote(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """2-D views of 1-D operands, as np.matmul does; flags say which to squeeze."""
    sq_a = a.ndim == 1
    sq_b = b.ndim == 1
    return (a[None, :] if sq_a else a), (b[:, None] if sq_b else b), sq_a, sq_b


def tiled_matmul(
    a: np.ndarray, b: np.ndarray, tile: Sequence[int], out: np.ndarray | None = None
) -> np.ndarray:
    """``a @ b`` computed in ``tile = [tm, tn, tk]`` blocks.

    Returns int32 for 8-bit integer inputs, int64 for wider integers, and
    ``np.result_type(a, b)`` for floats.  When `out` is given (an arena view of
    the right shape) the result is written there and `out` is returned.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("tiled_matmul: operands must not be scalars")
    tm, tn, tk = (int(t) for t in tile)
    if min(tm, tn, tk) <= 0:
        raise ValueError(f"tiled_matmul: tile sizes must be positive, got {list(tile)}")
    a2, b2, sq_a, sq_b = _promote(a, b)
    m, k = a2.shape[-2:]
    k2, n = b2.shape[-2:]
    if k != k2:
        raise ValueError(f"tiled_matmul: inner dimensions differ: {a.shape} x {b.shape}")
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])

    is_int = a2.dtype.kind in "iu" and b2.dtype.kind in "iu"
    small_int = is_int and a2.dtype.itemsize == 1 and b2.dtype.itemsize == 1
    if small_int:
        tk = min(tk, exact_int_k(a2.dtype, b2.dtype))
        acc_dtype, out_dtype = np.dtype(np.int32), np.dtype(np.int32)
        a2, b2 = a2.astype(np.float32), b2.astype(np.float32)
    elif is_int:
        acc_dtype = out_dtype = np.dtype(np.int64)
        a2, b2 = a2.astype(np.int64), b2.astype(np.int64)
    else:
        out_dtype = np.result_type(a2.dtype, b2.dtype)
        acc_dtype = np.dtype(np.float64) if out_dtype == np.float64 else np.dtype(np.float32)
        a2, b2 = a2.astype(acc_dtype, copy=False), b2.astype(acc_dtype, copy=False)

    acc = np.zeros(batch + (m, n), dtype=acc_dtype)
    for i0 in range(0, m, tm):
        i1 = min(i0 + tm, m)
        for j0 in range(0, n, tn):
            j1 = min(j0 + tn, n)
            block = acc[..., i0:i1, j0:j1]
            for k0 in range(0, k, tk):
                k1 = min(k0 + tk, k)
                part = np.matmul(a2[..., i0:i1, k0:k1], b2[..., k0:k1, j0:j1])
                # an exact float32 integer -> int32 partial, accumulated in int32
                block += part.astype(np.int32) if small_int else part
    result = acc.astype(out_dtype, copy=False)
    if sq_a:
        result = result[..., 0, :]
    if sq_b:
        result = result[..., 0]
    if out is not None:
        out[...] = result
        return out
    return result
