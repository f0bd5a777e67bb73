"""tile: plan Cube ops larger than the Cube block into tiles.

A Cube op (MatMul, Gemm, fused.matmul_*, Conv / fused.conv as implicit GEMM,
and the integer forms quant.matmul / quant.conv / MatMulInteger) whose M, N or K
exceeds `size` gets ``tile = [tm, tn, tk]`` (tile sizes, ``min(size, dim)``)
and ``tiles = [nm, nn, nk]`` (tile counts, ceil division).  Tails are ragged:
the last tile along a dim is shorter, not padded in the plan — the Cube
hardware pads it to a fractal and the cost model charges that padding.  The
runtime follows the plan tile by tile only for integer products (there tk bounds
the partial sums float32 BLAS computes exactly); float products run as one BLAS
call.  A symbolic dim (dynamic batch) gets a full-size tile and count ``-1``
(known at run time).  For 8-bit integer ops ``tk`` is capped at 256 so each
K-tile sums exactly in float32 (``256 * 127 * 127 < 2**24``).  ConvTranspose is
not tiled (its runtime kernel is not a single GEMM).

    %y = MatMul(%a, %b) : (tensor<4096x128xf32>, tensor<128x4096xf32>) -> tensor<4096x4096xf32>
    // tile{size=256} ==>
    %y = MatMul(%a, %b) {tile = [256, 256, 128], tiles = [16, 16, 1]} : ...

Statistics: ``tiling.tiled_ops`` and ``tiling.tiles`` (total tiles, batch included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ir.core import Graph
from ir.registry import gemm_dims
from passes.base import Pass, PassContext, PassError, register

__all__ = ["INT8_MAX_TK", "TilePass"]

INT8_MAX_TK = 256  # 256 * 127 * 127 < 2**24: a K-tile of int8 products sums exactly in f32


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@register
@dataclass
class TilePass(Pass):
    name: ClassVar[str] = "tile"
    size: int = 256

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        size = int(self.size)
        if size <= 0 or size % 16:
            raise PassError(f"tile: size must be a positive multiple of 16 (the Cube fractal), got {size}")
        soc = ctx.soc
        if soc is not None and size > soc.max_cube_block:
            ctx.diagnostics.append(
                f"tile: size {size} exceeds {soc.name}'s largest Cube block {soc.max_cube_block}; using {soc.max_cube_block}")
            size = soc.max_cube_block
        changed = False
        for op in graph.ops:
            g = gemm_dims(op)
            if g is None or g.kind == "conv_transpose":
                continue
            m, k, n = g.dims
            if not any(isinstance(d, int) and d > size for d in (m, k, n)):
                continue
            kcap = size
            if g.dtype.is_int and g.dtype.itemsize == 1:
                kcap = min(size, INT8_MAX_TK)
            tm = min(size, m) if isinstance(m, int) else size
            tn = min(size, n) if isinstance(n, int) else size
            tk = min(kcap, k) if isinstance(k, int) else kcap
            counts = [_ceil(d, t) if isinstance(d, int) else -1 for d, t in ((m, tm), (n, tn), (k, tk))]
            tile, tiles = [tm, tn, tk], counts
            if op.attrs.get("tile") == tile and op.attrs.get("tiles") == tiles:
                continue
            op.attrs["tile"] = tile
            op.attrs["tiles"] = tiles
            total = 1
            for c in counts:
                total *= max(c, 1)
            if isinstance(g.batch, int):
                total *= g.batch
            ctx.count("tiling", "tiled_ops")
            ctx.count("tiling", "tiles", total)
            changed = True
        return changed
