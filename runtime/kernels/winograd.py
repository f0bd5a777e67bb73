"""Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions.

A 3x3 conv computed directly costs 9 multiply-adds per output pixel, input
channel and output channel; Winograd's minimal filtering (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", 2015) computes each 2x2 output
tile from a 4x4 input tile with 16, i.e. 4 per pixel — 2.25x fewer — moving the
rest into cheap additions:

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A          (per tile, (.) elementwise)

Summed over input channels, the elementwise products become 16 independent
GEMMs ``V[16, tiles, Cin] @ U[16, Cin, Cout]`` — the Cube-sized part, on BLAS.
The weight transform ``U = G g G^T`` depends only on the weights: it is computed
once per step and kept (``attrs["_winograd_u"]``).  The input transform
``B^T d B`` and the output transform ``A^T m A`` only add and subtract strided
views (B and A hold 0 and +-1), so they cost a few memory passes.  They run
channels-last, so every numpy operation streams runs of C contiguous values; with
NCHW the runs were one tile row long (4..28 values at 7x7..56x56) and the
transforms cost as much as the products.

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
# (timed both ways on the light models' 3x3 convs and smaller ones, one BLAS
# thread): the 16 products have K = Cin, and BLAS is slow for small K; the
# products must also be big enough to pay for the per-call transform overhead.
MIN_CIN = 48
MIN_COUT = 16
MIN_WORK = 512  # Cout x tiles


def winograd_applies(k: tuple[int, ...], s: list[int], d: list[int], group: int, cin: int, cout: int,
                     osz: tuple[int, ...]) -> bool:
    """Whether a conv of this geometry runs as Winograd F(2x2, 3x3)."""
    if tuple(k) != (3, 3) or any(v != 1 for v in s) or any(v != 1 for v in d) or group != 1:
        return False
    tiles = math.ceil(osz[0] / 2) * math.ceil(osz[1] / 2)
    return cin >= MIN_CIN and cout >= MIN_COUT and cout * tiles >= MIN_WORK


def winograd_weights(w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """U[16, Cin, Cout] = G w G^T for every (Cout, Cin) pair, tile index a*4+b."""
    u = np.einsum("ai,mcij,bj->abcm", _G, w.astype(np.float64), _G, optimize=True)
    return np.ascontiguousarray(u.reshape(16, w.shape[1], w.shape[0]), dtype=dtype)


def _input_transform(xh: np.ndarray, th: int, tw: int, rows: np.ndarray, v: np.ndarray) -> None:
    """v[a*4+b, ty, tx] = (B^T d B)[a, b] for the 4x4 tile d at (2 ty, 2 tx) of xh [Hp, Wp, C].

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]: row a of a
    tile combines its rows as below; the same combination then runs over columns.
    Channels are innermost, so every operation streams runs of C contiguous values.
    `rows`: scratch [4, th, Wp, C]; `v`: [16, th, tw, C].
    """
    def r(i: int) -> np.ndarray:  # row i of every tile row: [th, Wp, C]
        return xh[i: i + 2 * th: 2]

    np.subtract(r(0), r(2), out=rows[0])
    np.add(r(1), r(2), out=rows[1])
    np.subtract(r(2), r(1), out=rows[2])
    np.subtract(r(1), r(3), out=rows[3])
    for a in range(4):
        ra = rows[a]
        c0, c1, c2, c3 = (ra[:, j: j + 2 * tw: 2] for j in range(4))
        np.subtract(c0, c2, out=v[4 * a + 0])
        np.add(c1, c2, out=v[4 * a + 1])
        np.subtract(c2, c1, out=v[4 * a + 2])
        np.subtract(c1, c3, out=v[4 * a + 3])


def _output_transform(m: np.ndarray, o: np.ndarray, s: np.ndarray) -> None:
    """o[ty, y, tx, x] = (A^T m A)[y, x] per tile; A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].

    `m`: [4, 4, th, tw, Cout]; `s`: scratch [2, 4, th, tw, Cout]; `o`: [th, 2, tw, 2, Cout].
    """
    np.add(m[0], m[1], out=s[0])
    s[0] += m[2]
    np.subtract(m[1], m[2], out=s[1])
    s[1] -= m[3]
    for y in range(2):
        sy = s[y]
        d0, d1 = o[:, y, :, 0], o[:, y, :, 1]
        np.add(sy[0], sy[1], out=d0)
        d0 += sy[2]
        np.subtract(sy[1], sy[2], out=d1)
        d1 -= sy[3]


def winograd_conv3x3(x: np.ndarray, u: np.ndarray, p: list[int], res: np.ndarray,
                     scratch: Any, bias: np.ndarray | None = None) -> None:
    """res[n] = conv3x3(x[n]) + bias (stride 1) by F(2x2, 3x3); `u` from `winograd_weights`.

    The work runs channels-last: the image is copied once into a zero-padded
    [Hp, Wp, C] buffer, the transforms and the 16 products ``V[16, tiles, Cin] @
    U[16, Cin, Cout]`` stream along channels, and the tiles come back to NCHW in
    one strided copy that also adds the bias.  `scratch(key, shape, dtype)` gives
    reusable work buffers (their contents are never assumed).
    """
    n, c, h, w = x.shape
    cout = u.shape[2]
    ho, wo = res.shape[2:]
    th, tw = -(-ho // 2), -(-wo // 2)
    hp, wp = 2 * th + 2, 2 * tw + 2
    top, left = p[0], p[1]
    dt = res.dtype
    xh = scratch(0, (hp, wp, c), dt)
    rows = scratch(1, (4, th, wp, c), dt)
    v = scratch(4, (16, th, tw, c), dt)
    mm = scratch(5, (16, th * tw, cout), dt)
    s = scratch(6, (2, 4, th, tw, cout), dt)
    o = scratch(7, (th, 2, tw, 2, cout), dt)
    # the image fills rows top..top+h and columns left..left+w; the rest is zero padding
    xh[:top] = 0
    xh[top + h:] = 0
    xh[top: top + h, :left] = 0
    xh[top: top + h, left + w:] = 0
    tiles = o.reshape(2 * th, 2 * tw, cout)[:ho, :wo].transpose(2, 0, 1)
    for i in range(n):
        np.copyto(xh[top: top + h, left: left + w], x[i].transpose(1, 2, 0), casting="unsafe")
        _input_transform(xh, th, tw, rows, v)
        np.matmul(v.reshape(16, th * tw, c), u, out=mm)
        _output_transform(mm.reshape(4, 4, th, tw, cout), o, s)
        if bias is None:
            np.copyto(res[i], tiles)
        else:
            np.add(tiles, bias.reshape(cout, 1, 1), out=res[i], casting="unsafe")
