"""Weight-only quantization: the group-wise INT8/INT4 format and ``quant.matmul_nbits``.

A float weight ``W [K, N]`` is cut along K into ``G = ceil(K / g)`` groups of ``g``
rows (the last padded with zero rows); each group and output column has a scale
(and, asymmetric, a zero point):

    symmetric  8 bits: q = clip(rint(w / s), -127, 127),  s = amax / 127,   w' = q · s
    symmetric  4 bits: q = clip(rint(w / s), -7, 7),      s = amax / 7,     w' = q · s
    asymmetric b bits: u = clip(rint(w / s) + z, 0, 2^b - 1),  s = (max - min) / (2^b - 1),
                       z = rint(-min / s),  w' = (u - z) · s
    with the range (amax, or min and max) shrunk by the fraction 1 .. 0.7 that gives the
    group the least squared error; |w' - w| <= s / 2 for every weight inside the range

Storage (the ``.om`` keeps exactly these arrays):

- 8 bits: int8 ``[G, g, N]`` (symmetric) or uint8 ``[G, g, N]`` (asymmetric, u);
- 4 bits: uint8 ``[G, g/2, N]``, two codes a byte as llama.cpp's Q4_0 packs them:
  byte ``j`` of a group holds row ``j`` in its low nibble and row ``j + g/2`` in its
  high one; symmetric codes are stored offset by 8 (``u = q + 8``);
- scales float32 ``[G, N]``; zero points float32 ``[G, N]`` (asymmetric only).

The kernel never materializes the float weight.  It works on tiles of about 256 rows:
the tile's codes become float32 (a copy, or unpacked nibbles) and, with one input
row (a decode step), each group's partial dot products ``P[g] = x_g · u_g`` are taken
as they are and scaled at the end, ``y = Σ_g s_g ⊙ (P_g - z_g · Σ x_g)``, so the
per-weight work is one conversion and the products; with more rows (a prompt) the
tile is dequantized and multiplied by BLAS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ir.types import DType
from runtime.kernels import kernel, planner, slot
from runtime.kernels.matmul import scratch

__all__ = ["TILE_ROWS", "dequantize_groups", "nbits_gather", "nbits_matmul", "pack_int4", "quantize_groups",
           "unpack_int4"]

TILE_ROWS = 256  # weight rows a tile converts at once
_U, _F, _P, _X = 40, 41, 42, 43  # the session's scratch buffers


SCALE_SEARCH = tuple(1.0 - 0.025 * i for i in range(13))  # the fractions of a group's range tried (1 .. 0.7)


def quantize_groups(w: np.ndarray, bits: int, group: int, symmetric: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(codes [G, g, N], scales [G, N], zeros [G, N] | None)`` of float `w` [K, N]:
    codes are signed for symmetric groups, ``0 .. 2^bits - 1`` for asymmetric ones.

    Each group's range is the fraction of its full range (``SCALE_SEARCH``, 1 down to
    0.7) with the least squared error over the group: clipping a few outliers buys a
    finer step for all the others (llama.cpp's k-quants search their scales the same
    way).  Every weight stays within half a step of its code's value or is clipped to
    the range's end."""
    k, n = w.shape
    g_count = -(-k // group)
    wp = np.zeros((g_count * group, n), np.float64)
    wp[:k] = w
    wg = wp.reshape(g_count, group, n)
    best = None
    for r in SCALE_SEARCH:
        q, s, z = _round_groups(wg, bits, symmetric, r)
        back = (q - (0.0 if z is None else z[:, None, :])) * s[:, None, :]
        err = ((back - wg) ** 2).sum(axis=1)
        if best is None:
            best = [err, q, s, z]
            continue
        better = err < best[0]
        best[0] = np.where(better, err, best[0])
        best[1] = np.where(better[:, None, :], q, best[1])
        best[2] = np.where(better, s, best[2])
        if z is not None:
            best[3] = np.where(better, z, best[3])
    _, q, s, z = best  # type: ignore[misc]
    if symmetric:
        return q.astype(np.int8), s.astype(np.float32), None
    return q.astype(np.uint8), s.astype(np.float32), z.astype(np.float32)


def _round_groups(wg: np.ndarray, bits: int, symmetric: bool, ratio: float):
    """Codes, scales and zeros of groups ``[G, g, N]`` over `ratio` of each group's range."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        amax = np.abs(wg).max(axis=1) * ratio
        s = np.where(amax > 0, amax / qmax, 1.0)
        return np.clip(np.rint(wg / s[:, None, :]), -qmax, qmax), s, None
    top = 2 ** bits - 1
    lo = np.minimum(wg.min(axis=1), 0.0) * ratio  # 0 stays exactly representable
    hi = np.maximum(wg.max(axis=1), 0.0) * ratio
    s = np.where(hi > lo, (hi - lo) / top, 1.0)
    z = np.clip(np.rint(-lo / s), 0, top)
    return np.clip(np.rint(wg / s[:, None, :]) + z[:, None, :], 0, top), s, z


def pack_int4(codes: np.ndarray, symmetric: bool = True) -> np.ndarray:
    """4-bit codes ``[G, g, N]`` -> bytes ``[G, g/2, N]`` (see the module docstring)."""
    u = codes.astype(np.int16) + (8 if symmetric else 0)
    if u.min(initial=0) < 0 or u.max(initial=0) > 15:
        raise ValueError("4-bit codes out of range")
    h = codes.shape[1] // 2
    return (u[:, :h] | (u[:, h:] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """bytes ``[G, g/2, N]`` -> the stored nibbles ``[G, g, N]`` (uint8, offset kept)."""
    gc, h, n = packed.shape
    u = np.empty((gc, 2, h, n), np.uint8) if out is None else out.reshape(gc, 2, h, n)
    np.bitwise_and(packed, 15, out=u[:, 0])
    np.right_shift(packed, 4, out=u[:, 1])
    return u.reshape(gc, 2 * h, n)


def _offset(bits: int, zeros: np.ndarray | None, scales: np.ndarray) -> np.ndarray | float:
    """What the stored codes are offset by: 0 (8-bit symmetric), 8 (4-bit symmetric) or z."""
    if zeros is not None:
        return zeros
    return 8.0 if bits == 4 else 0.0


def dequantize_groups(qweight: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, bits: int,
                      k: int) -> np.ndarray:
    """The float32 weight ``[K, N]`` (for tests and reference: the kernel never builds it)."""
    u = unpack_int4(qweight) if bits == 4 else qweight
    off = _offset(bits, zeros, scales)
    w = (u.astype(np.float32) - (off[:, None, :] if isinstance(off, np.ndarray) else np.float32(off)))
    w *= scales[:, None, :]
    return w.reshape(-1, w.shape[-1])[:k]


class _Plan:
    """The buffers and views of one ``quant.matmul_nbits`` over a fixed input shape."""

    def __init__(self, x: np.ndarray, qweight: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None,
                 attrs: dict[str, Any], o: np.ndarray) -> None:
        self.bits, self.k = int(attrs["bits"]), int(attrs["k"])
        self.qw, self.s = qweight, scales
        g_count, n = scales.shape
        self.group = int(attrs["group_size"])
        self.tg = max(1, TILE_ROWS // self.group)  # groups a tile
        rows = x.size // x.shape[-1] if x.ndim else 1
        self.x2 = x.reshape(rows, x.shape[-1])
        self.o2 = o.reshape(rows, n)
        kp = g_count * self.group
        self.xp = scratch(attrs, _X, (rows, kp), np.float32) if kp != self.k else None
        self.u = scratch(attrs, _U, (self.tg, self.group, n), np.uint8) if self.bits == 4 else None
        self.f = scratch(attrs, _F, (self.tg, self.group, n), np.float32)
        self.p = scratch(attrs, _P, (g_count, 1, n), np.float32) if rows == 1 else None
        off = _offset(self.bits, zeros, scales)
        self.so = (scales * off).astype(np.float32) if isinstance(off, np.ndarray) or off else None  # s·z
        self.off = off

    def _codes(self, j: int, m: int) -> np.ndarray:
        """Groups ``j .. j+m`` as float32 codes (offset still in), in the tile buffer."""
        f = self.f[:m]
        if self.bits == 4:
            np.copyto(f, unpack_int4(self.qw[j:j + m], self.u[:m]))  # type: ignore[index]
        else:
            np.copyto(f, self.qw[j:j + m])
        return f

    def __call__(self) -> None:
        x = self.x2
        if self.xp is not None:  # K padded to whole groups: zero inputs meet the zero rows
            self.xp[:, :self.k] = x
            self.xp[:, self.k:] = 0
            x = self.xp
        if self.p is not None:
            self._one_row(x[0])
        else:
            self._rows(x)

    def _one_row(self, x: np.ndarray) -> None:
        g_count, g = self.s.shape[0], self.group
        xg = x.reshape(g_count, 1, g)
        for j in range(0, g_count, self.tg):
            m = min(self.tg, g_count - j)
            np.matmul(xg[j:j + m], self._codes(j, m), out=self.p[j:j + m])  # type: ignore[index]
        y = self.o2[0]
        np.einsum("gn,gn->n", self.s, self.p[:, 0], out=y)  # type: ignore[index]
        if self.so is not None:  # minus Σ_g (s·z)_g Σ x_g
            y -= np.einsum("g,gn->n", xg[:, 0].sum(axis=1), self.so)

    def _rows(self, x: np.ndarray) -> None:
        g_count, g = self.s.shape[0], self.group
        self.o2.fill(0)
        for j in range(0, g_count, self.tg):
            m = min(self.tg, g_count - j)
            f = self._codes(j, m)
            if isinstance(self.off, np.ndarray):
                f -= self.off[j:j + m, None, :]
            elif self.off:
                f -= np.float32(self.off)
            f *= self.s[j:j + m, None, :]
            self.o2 += x[:, j * g:(j + m) * g] @ f.reshape(m * g, -1)


def nbits_matmul(x: np.ndarray, qweight: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None,
                 attrs: dict[str, Any], o: np.ndarray | None = None) -> np.ndarray:
    """``x @ W`` for `x` [..., K] float32 and W stored as `qweight`/`scales`/`zeros`."""
    n = scales.shape[1]
    shape = x.shape[:-1] + (n,)
    if o is None or o.shape != shape or o.dtype != np.float32 or not o.flags.c_contiguous:
        o = np.empty(shape, np.float32)
    xs = np.ascontiguousarray(x, dtype=np.float32)
    _Plan(xs, qweight, scales, zeros, attrs, o)()
    return o


def nbits_gather(idx: np.ndarray, qweight: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None,
                 bits: int, d: int) -> np.ndarray:
    """Rows `idx` of a table stored transposed (``[G, g or g/2, V]``): only the picked
    columns are dequantized."""
    flat = idx.reshape(-1).astype(np.int64)
    v = scales.shape[1]
    if flat.size and (flat.min() < -v or flat.max() >= v):
        raise IndexError(f"Gather index out of range for a table of {v} rows")
    cols = dequantize_groups(qweight[:, :, flat], scales[:, flat], None if zeros is None else zeros[:, flat], bits, d)
    return np.ascontiguousarray(cols.T).reshape(idx.shape + (d,))


@kernel("quant.gather_nbits")
def _gather_nbits(inputs, attrs, out):
    z = inputs[3] if len(inputs) > 3 else None
    r = nbits_gather(inputs[0], inputs[1], inputs[2], z, int(attrs["bits"]), int(attrs["d"]))
    o = slot(out, 0)
    if o is not None and o.shape == r.shape:
        np.copyto(o, r, casting="unsafe")
        return [o]
    return [r.astype(DType(attrs.get("dtype", "f32")).numpy)]


@kernel("quant.matmul_nbits", scratch=True)
def _matmul_nbits(inputs, attrs, out):
    x, qw, s = inputs[0], inputs[1], inputs[2]
    z = inputs[3] if len(inputs) > 3 else None
    r = nbits_matmul(x, qw, s, z, attrs, slot(out, 0))
    return [r if x.dtype == np.float32 else r.astype(x.dtype)]


@planner("quant.matmul_nbits")
def _plan_matmul_nbits(inputs, attrs, out):
    x, qw, s = inputs[0], inputs[1], inputs[2]
    z = inputs[3] if len(inputs) > 3 else None
    o = out[0]
    if x.dtype != np.float32 or o.dtype != np.float32 or not (x.flags.c_contiguous and o.flags.c_contiguous):
        return None
    if o.shape != x.shape[:-1] + (s.shape[1],):
        return None
    return _Plan(x, qw, s, z, attrs, o)
