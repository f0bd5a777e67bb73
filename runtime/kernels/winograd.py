"""Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions.

A 3x3 conv computed directly costs 9 multiply-adds per output pixel, input
channel and output channel; Winograd's minimal filtering (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", 2015) computes each 2x2 output
tile from a 4x4 input tile with 16, i.e. 4 per pixel — 2.25x fewer — moving the
rest into cheap additions:

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A          (per tile, (.) elementwise)

Summed over input channels, the elementwise products become 16 independent
GEMMs ``U[16, Cout, Cin] @ V[16, Cin, tiles]`` — the Cube-sized part, on BLAS.
The weight transform ``U = G g G^T`` depends only on the weights: it is computed
once per step and kept (``attrs["_winograd_u"]``).  The input transform
``B^T d B`` and the output transform ``A^T m A`` only add and subtract strided
views (B and A hold 0 and +-1), so they cost a few memory passes.

The result differs from the direct sum in rounding only (the transforms are
exact up to one extra rounding per addition; F(2x2, 3x3) has the smallest error
of the Winograd family, which is why the larger tiles are not used).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["winograd_applies", "winograd_conv3x3", "winograd_weights"]

# G (4x3) of F(2, 3); B and A are applied as additions below
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

# Below these sizes the transforms cost more than the 2.25x fewer products save
# (timed both ways on the light models' 3x3 convs, one BLAS thread): the 16
# products have K = Cin, and BLAS is slow for K < 64; each product needs enough
# output channels x tiles to pay for the transforms.
MIN_CIN = 64
MIN_COUT = 32
MIN_WORK = 4096  # Cout x tiles


def winograd_applies(k: tuple[int, ...], s: list[int], d: list[int], group: int, cin: int, cout: int,
                     osz: tuple[int, ...]) -> bool:
    """Whether a conv of this geometry runs as Winograd F(2x2, 3x3)."""
    if tuple(k) != (3, 3) or any(v != 1 for v in s) or any(v != 1 for v in d) or group != 1:
        return False
    tiles = math.ceil(osz[0] / 2) * math.ceil(osz[1] / 2)
    return cin >= MIN_CIN and cout >= MIN_COUT and cout * tiles >= MIN_WORK


def winograd_weights(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """U[16, Cout, Cin] = G w G^T for every (Cout, Cin) pair, tile index a*4+b."""
    u = np.einsum("ai,mcij,bj->abmc", _G, w.astype(np.float64), _G, optimize=True)
    return np.ascontiguousarray(u.reshape(16, w.shape[0], w.shape[1]), dtype=dtype)


def _fill_padded(xi: np.ndarray, top: int, left: int, xd: np.ndarray) -> None:
    """xd[C, Hp, 2, Wp/2] = xi zero-padded (top/left, the rest below/right), its
    columns split by parity: xd[:, r, q, j] is padded column 2*j + q.  Split so the
    tile-column taps of the input transform read unit-stride slices."""
    h, w = xi.shape[1:]
    xd[:, :top] = 0
    xd[:, top + h:] = 0
    for q in range(2):
        j0 = max(0, -(-(left - q) // 2))  # first half-column holding an image column
        x0 = q - left + 2 * j0
        cnt = max(0, -(-(w - x0) // 2))
        band = xd[:, top: top + h, q]
        band[:, :, :j0] = 0
        band[:, :, j0 + cnt:] = 0
        band[:, :, j0: j0 + cnt] = xi[:, :, x0::2]


def _input_transform(xd: np.ndarray, r0: int, tb: int, tw: int, rows: np.ndarray, v: np.ndarray) -> None:
    """v[a*4+b] = (B^T d B)[a, b] for the 4x4 tiles d of tile rows r0..r0+tb (stride 2).

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: row a of a
    tile combines its rows as below; the same combination then runs over columns.
    `rows`: scratch [4, C, tb, 2, Wp/2]; `v`: [16, C, tb, tw].
    """
    def r(i: int) -> np.ndarray:  # row i of every tile in the band: [C, tb, 2, Wp/2]
        return xd[:, 2 * r0 + i: 2 * (r0 + tb) + i: 2]

    np.subtract(r(0), r(2), out=rows[0])
    np.add(r(1), r(2), out=rows[1])
    np.subtract(r(2), r(1), out=rows[2])
    np.subtract(r(1), r(3), out=rows[3])
    for a in range(4):
        ra = rows[a]
        c0, c1, c2, c3 = ra[:, :, 0, :tw], ra[:, :, 1, :tw], ra[:, :, 0, 1:tw + 1], ra[:, :, 1, 1:tw + 1]
        np.subtract(c0, c2, out=v[4 * a + 0])
        np.add(c1, c2, out=v[4 * a + 1])
        np.subtract(c2, c1, out=v[4 * a + 2])
        np.subtract(c1, c3, out=v[4 * a + 3])


def _output_transform(m: np.ndarray, res: np.ndarray, s: np.ndarray) -> None:
    """res[:, 2i+y, 2j+x] = (A^T m A)[y, x] per tile; A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].

    `m`: [4, 4, Cout, tb, tw]; `s`: scratch [2, 4, Cout, tb, tw]; `res`: the band's
    output rows [Cout, <= 2*tb, Wo].
    """
    np.add(m[0], m[1], out=s[0])
    s[0] += m[2]
    np.subtract(m[1], m[2], out=s[1])
    s[1] -= m[3]
    for y in range(2):
        sy = s[y]
        for x in range(2):
            dst = res[:, y::2, x::2]
            h, w = dst.shape[1:]
            if x == 0:
                np.add(sy[0, :, :h, :w], sy[1, :, :h, :w], out=dst)
                dst += sy[2, :, :h, :w]
            else:
                np.subtract(sy[1, :, :h, :w], sy[2, :, :h, :w], out=dst)
                dst -= sy[3, :, :h, :w]


# the input tiles of one band of tile rows take about this many bytes (16 x C x tiles),
# so a band's transforms and products stay in the CPU's L2/L3 cache
BAND_BYTES = 1 << 21


def winograd_conv3x3(x: np.ndarray, u: np.ndarray, p: list[int], res: np.ndarray,
                     scratch: Any) -> None:
    """res[n] = conv3x3(x[n]) (stride 1, no bias) by F(2x2, 3x3); `u` from `winograd_weights`.

    The tiles are processed in bands of tile rows (input transform, the 16
    products, output transform per band).  `scratch(key, shape, dtype)` gives
    reusable work buffers.
    """
    n, c = x.shape[:2]
    cout = u.shape[1]
    ho, wo = res.shape[2:]
    th, tw = -(-ho // 2), -(-wo // 2)
    dt = res.dtype
    tb = max(1, min(th, BAND_BYTES // (16 * c * tw * dt.itemsize)))
    xd = scratch(0, (c, 2 * th + 2, 2, tw + 1), dt)
    rows = scratch(1, (4, c, tb, 2, tw + 1), dt)
    v = scratch(4, (16, c, tb * tw), dt)
    mm = scratch(5, (16, cout, tb * tw), dt)
    s = scratch(6, (2, 4, cout, tb, tw), dt)
    for i in range(n):
        _fill_padded(x[i], p[0], p[1], xd)
        for r0 in range(0, th, tb):
            nb = min(tb, th - r0)
            vb, mb, sb = v[:, :, : nb * tw], mm[:, :, : nb * tw], s[:, :, :, :nb]
            _input_transform(xd, r0, nb, tw, rows[:, :, :nb], vb.reshape(16, c, nb, tw))
            np.matmul(u, vb, out=mb)
            _output_transform(mb.reshape(4, 4, cout, nb, tw), res[i, :, 2 * r0: 2 * (r0 + nb)], sb)
