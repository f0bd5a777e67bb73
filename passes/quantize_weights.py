"""quantize-weights: weight-only INT8 / INT4 (``--quant_type=W8A16|W4A16``).

Each MatMul (and ``fused.matmul_add``) whose weight is a constant 2-D float matrix
``[K, N]`` keeps its float activations and gets its weight stored group-wise in 8
or 4 bits (`runtime.kernels.nbits`: ``--weight_group_size`` rows of K a scale,
symmetric with zero point 0 by default, ``--weight_symmetric=false`` a zero point a
group; INT4 packed two a byte; a K shorter than a group is one group).  A decode step is bound by the bytes it reads, and
the weight is most of them: 4 bits and a float32 scale per 128 weights are 0.133x
the float32 bytes, 8 bits 0.258x.

    %y = MatMul(%x, %w) : (tensor<1x"S"x512xf32>, tensor<512x1408xf32>) -> tensor<1x"S"x1408xf32>
    // quantize-weights{bits=4, group_size=128} ==>
    %y = quant.matmul_nbits(%x, %w_q4, %w_scale) {bits = 4, group_size = 128, k = 512, n = 1408}
       : (tensor<1x"S"x512xf32>, tensor<4x64x1408xu8>, tensor<4x1408xf32>) -> tensor<1x"S"x1408xf32>

An embedding ``Gather`` (rows of a constant table ``[V, D]``) is stored the same way in
groups along D, transposed (``quant.gather_nbits``): a run dequantizes the rows it picks.

Rounding: ``rtn`` (round to nearest) or ``gptq`` — GPTQ's column-by-column error
feedback with the inputs' ``H = Σ x xᵀ`` measured on the calibration samples (one
sweep of the float graph; each group's scale fixed from its weights as the sweep
reaches it, "static groups").  A bias of ``fused.matmul_add`` becomes an ``Add`` after
the product.  Ops named in ``keep_dtype`` stay float.  With ``weights_meta_only``
(a plan of a model whose weights were never loaded) the stored arrays are
placeholders of the right shapes and dtypes that read no weight byte.

Statistics: ``quantization.weight_only_ops``, ``quantization.weight_only_tables``,
``quantization.weight_bytes_float``, ``quantization.weight_bytes_quantized``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ir.core import Graph, Op
from passes._conv_fold import const_of
from passes._rewrite import replace_op
from passes.base import Pass, PassContext, PassError, register
from passes.quantize import kept, parse_keep_dtype
from runtime.kernels.nbits import pack_int4, quantize_groups

__all__ = ["QuantizeWeights", "gptq_groups"]

_KINDS = ("MatMul", "fused.matmul_add")


def _tables(graph: Graph, keep: set[str]) -> list[tuple[Op, np.ndarray]]:
    """Gathers of rows out of a constant 2-D float table (embeddings)."""
    out = []
    for op in graph.ops:
        if op.kind != "Gather" or int(op.attrs.get("axis", 0)) != 0 or kept(op, keep):
            continue
        t = const_of(op.operands[0])
        if t is not None and t.ndim == 2 and t.dtype.kind == "f" and t.shape[1] >= 2:
            out.append((op, t))
    return out


def _candidates(graph: Graph, keep: set[str]) -> list[tuple[Op, np.ndarray]]:
    out = []
    for op in graph.ops:
        if op.kind not in _KINDS or len(op.operands) < 2 or kept(op, keep):
            continue
        w = const_of(op.operands[1])
        x = op.operands[0]
        if w is None or w.ndim != 2 or w.dtype.kind != "f" or x is None or x.type.rank < 2:
            continue
        if op.kind == "fused.matmul_add" and op.attrs.get("act", "none") not in ("none", None):
            continue
        out.append((op, w))
    return out


def gptq_groups(w: np.ndarray, h: np.ndarray, bits: int, group: int, symmetric: bool = True,
                damp: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """GPTQ for `w` [K, N] with ``H = Σ x xᵀ`` [K, K]: the codes/scales/zeros of
    `runtime.kernels.nbits.quantize_groups`, the rounding error of each row of K fed
    forward onto the rows not yet rounded.  A group's scales come from its weights as
    updated when the sweep reaches it."""
    k, n = w.shape
    g_count = -(-k // group)
    work = np.zeros((g_count * group, n), np.float64)
    work[:k] = w
    hd = np.zeros((g_count * group,) * 2)
    hd[:k, :k] = h
    diag = np.diag(hd).copy()
    dead = diag <= 0
    hd[dead, dead] = 1.0
    hd[np.diag_indices_from(hd)] += damp * float(np.mean(np.diag(hd)))
    try:
        u = np.linalg.cholesky(np.linalg.inv(hd)).T
    except np.linalg.LinAlgError:
        return quantize_groups(w, bits, group, symmetric)
    codes = np.zeros((g_count, group, n), np.int16)
    scales = np.zeros((g_count, n), np.float32)
    zeros = np.zeros((g_count, n), np.float32) if not symmetric else None
    for gi in range(g_count):
        rows = slice(gi * group, (gi + 1) * group)
        c, s, z = quantize_groups(work[rows], bits, group, symmetric)
        scales[gi], codes[gi] = s[0], c[0]
        if zeros is not None and z is not None:
            zeros[gi] = z[0]
        sd, zd = s[0].astype(np.float64), (z[0].astype(np.float64) if z is not None else 0.0)
        for j in range(gi * group, (gi + 1) * group):
            q = np.rint(work[j] / sd) + zd
            q = np.clip(q, -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else np.clip(q, 0, 2 ** bits - 1)
            codes[gi, j - gi * group] = q
            err = (work[j] - (q - zd) * sd) / u[j, j]
            work[j + 1:] -= np.outer(u[j, j + 1:], err)
    return codes.astype(np.int8 if symmetric else np.uint8), scales, zeros


@register
@dataclass
class QuantizeWeights(Pass):
    """Weight-only INT8/INT4 MatMuls (see module doc); options default to the compile's."""

    name: ClassVar[str] = "quantize-weights"
    bits: int = 0  # 0: from quant_type (W8A16: 8, W4A16: 4)
    group_size: int = 0  # 0: weight_group_size
    rounding: str = ""  # "": weight_rounding
    symmetric: int = -1  # -1: weight_symmetric
    tables: int = 1  # embedding Gathers too

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        o = ctx.options
        bits = self.bits or {"W8A16": 8, "W4A16": 4}.get(o.quant_type or "", 0)
        if bits not in (4, 8):
            raise PassError(f"quantize-weights: bits must be 4 or 8 (set quant_type=W8A16|W4A16), got {bits}")
        group = self.group_size or o.weight_group_size
        rounding = self.rounding or o.weight_rounding
        sym = bool(o.weight_symmetric if self.symmetric < 0 else self.symmetric)
        todo = _candidates(graph, parse_keep_dtype(o.keep_dtype))
        hessians = self._hessians(graph, todo, ctx) if rounding == "gptq" and not o.weights_meta_only else {}
        for op, w in todo:
            self._rewrite(graph, op, w, bits, group, sym, hessians.get(op.operands[0].name), ctx)
        tables = _tables(graph, parse_keep_dtype(o.keep_dtype)) if self.tables else []
        for op, t in tables:
            self._rewrite_table(graph, op, t, bits, group, sym, ctx)
        graph.erase_dead()
        return bool(todo or tables)

    def _stored(self, w: np.ndarray, bits: int, group: int, sym: bool, meta: bool, h: np.ndarray | None = None):
        """(qweight, scales, zeros | None) of `w` [K, N] in groups along K (placeholders when `meta`)."""
        k, n = w.shape
        g_count = -(-k // group)
        if meta:  # shapes and bytes only: no weight byte is read
            dt = np.uint8 if bits == 4 or not sym else np.int8
            qw = np.broadcast_to(np.zeros((), dt), (g_count, group // 2 if bits == 4 else group, n))
            s = np.broadcast_to(np.ones((), np.float32), (g_count, n))
            return qw, s, (None if sym else s)
        codes, s, z = gptq_groups(w, h, bits, group, sym) if h is not None else quantize_groups(w, bits, group, sym)
        return (pack_int4(codes, sym) if bits == 4 else codes), s, z

    def _rewrite_table(self, graph: Graph, op: Op, t: np.ndarray, bits: int, group: int, sym: bool,
                       ctx: PassContext) -> None:
        d = t.shape[1]
        group = min(group, d + d % 2)
        qw, s, z = self._stored(t.T, bits, group, sym, ctx.options.weights_meta_only)  # groups along D
        base = op.operands[0].name
        operands = [op.operands[1], graph.const(qw, f"{base}_q{bits}"), graph.const(s, f"{base}_scale")]
        if z is not None:
            operands.append(graph.const(z, f"{base}_zero"))
        attrs = {"bits": bits, "group_size": group, "d": d, **({"name": op.attrs["name"]} if "name" in op.attrs else {})}
        new = graph.add_op("quant.gather_nbits", operands, attrs, before=op)
        replace_op(graph, op, [new.result], inherit_names=True)
        ctx.count("quantization", "weight_only_tables")
        ctx.count("quantization", "weight_bytes_float", int(t.nbytes))
        ctx.count("quantization", "weight_bytes_quantized", int(qw.nbytes + s.nbytes + (z.nbytes if z is not None else 0)))

    def _hessians(self, graph: Graph, todo: list[tuple[Op, np.ndarray]], ctx: PassContext) -> dict:
        cal = ctx.options.calibrator
        if cal is None or not cal.samples:
            raise PassError("quantize-weights: weight_rounding=gptq needs calibration samples (--calibration_data)")
        names = sorted({op.operands[0].name for op, _ in todo})
        hs: dict[str, np.ndarray] = {}

        def each(name: str, x: np.ndarray) -> None:
            rows = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
            hs[name] = hs.get(name, 0) + rows.T @ rows

        cal.sweep(graph, names, each)
        return hs

    def _rewrite(self, graph: Graph, op: Op, w: np.ndarray, bits: int, group: int, sym: bool,
                 h: np.ndarray | None, ctx: PassContext) -> None:
        k, n = w.shape
        group = min(group, k + k % 2)  # a weight shorter than a group is one group (no zero padding)
        base = op.operands[1].name
        qw, s, z = self._stored(w, bits, group, sym, ctx.options.weights_meta_only, h)
        operands = [op.operands[0], graph.const(qw, f"{base}_q{bits}"), graph.const(s, f"{base}_scale")]
        if z is not None:
            operands.append(graph.const(z, f"{base}_zero"))
        attrs = {"bits": bits, "group_size": group, "k": k, "n": n}
        if "name" in op.attrs:
            attrs["name"] = op.attrs["name"]
        new = graph.add_op("quant.matmul_nbits", operands, attrs, before=op)
        out = new.result
        if op.kind == "fused.matmul_add":
            out = graph.add_op("Add", [out, op.operands[2]], before=op).result
        replace_op(graph, op, [out], inherit_names=True)
        ctx.count("quantization", "weight_only_ops")
        ctx.count("quantization", "weight_bytes_float", int(w.nbytes))
        ctx.count("quantization", "weight_bytes_quantized", int(qw.nbytes + s.nbytes + (z.nbytes if z is not None else 0)))
