"""The causal + padding mask of transformers' exports as one ``fused.causal_mask``
(a rule of `passes.fuse_attention`).

transformers (``sdpa_mask``) builds the attention mask of a decoder from index
arithmetic: the keys' positions ``kv = Range(0, T)``, the queries' positions
``q = cache_position`` (``Range(P, P + S)``), the padding mask gathered per batch
row out of the flattened ``attention_mask`` at ``b·T + kv``, and

    keep = And(LessOrEqual(kv[1,1,1,T], q[1,1,S,1]), pad[B,1,1,T])     (B x 1 x S x T)
    mask = Where(keep, 0, -inf)                                         (additive, for the attention)

A decode step ran that as a dozen small steps.  This rule proves each piece from
the graph — the key index is exactly ``j`` along the last axis, the padding is
exactly ``attention_mask[b, j]`` — with a small affine analysis of integer
tensors (`_affine`: each value as ``Σ coef_axis · index_axis + const``, the
coefficients polynomials of the dims), then replaces ``keep`` (or the ``Where``
when it is the only user) by

    %mask = fused.causal_mask(%attention_mask, %positions) {dtype = "f32", masked = -inf}

The query positions are read as they are (any values), so the rule needs no
assumption about them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ir.core import Op, Value
from ir.symbolic import dim_add, dim_mul
from ir.types import DType
from passes._conv_fold import const_of
from passes._rewrite import Rewriter
from passes.base import PassContext

__all__ = ["fuse_causal_mask"]

_VIEWS = ("Unsqueeze", "Reshape", "Squeeze", "Flatten")
_MAX_DEPTH = 24


@dataclass(frozen=True)
class _Affine:
    """An integer tensor of `shape` whose element at index ``i`` is ``Σ coefs[a]·i[a] + const``."""

    shape: tuple
    coefs: tuple
    const: object

    @property
    def is_scalar(self) -> bool:
        return all(c == 0 for c in self.coefs)


def _nonunit(shape: tuple) -> list:
    return [d for d in shape if d != 1]


def _view_of(v: Value) -> Value | None:
    """The operand of a view op (only size-1 dims added or removed) producing `v`."""
    op = v.producer
    if op is None or op.kind not in _VIEWS or not op.operands or op.operands[0] is None:
        return None
    x = op.operands[0]
    return x if _nonunit(x.type.shape) == _nonunit(v.type.shape) else None


def _affine(v: Value | None, depth: int = 0) -> _Affine | None:
    if v is None or depth > _MAX_DEPTH or v.type.dtype not in (DType.i64, DType.i32):
        return None
    shape = v.type.shape
    c = const_of(v)
    if c is not None:
        return _Affine(shape, (0,) * len(shape), int(c.reshape(-1)[0])) if c.size == 1 else None
    op = v.producer
    if op is None:
        return None
    if op.kind == "sym.dims" and len(op.attrs["dims"]) == 1:
        return _Affine(shape, (0,) * len(shape), op.attrs["dims"][0])
    if op.kind == "Cast":
        return _affine(op.operands[0], depth + 1)
    if op.kind == "Range":
        start, delta = _affine(op.operands[0], depth + 1), const_of(op.operands[2])
        if start is None or not start.is_scalar or delta is None or delta.size != 1 or int(delta.reshape(-1)[0]) != 1:
            return None
        return _Affine(shape, (1,), start.const)
    src = _view_of(v) if op.kind in _VIEWS else None
    if src is not None:
        a = _affine(src, depth + 1)
        if a is None:
            return None
        coefs = iter([k for d, k in zip(a.shape, a.coefs) if d != 1])
        return _Affine(shape, tuple(0 if d == 1 else next(coefs) for d in shape), a.const)
    if op.kind in ("Add", "Mul"):
        a, b = (_affine(x, depth + 1) for x in op.operands[:2])
        if a is None or b is None:
            return None
        a_c, b_c = _aligned(a, len(shape)), _aligned(b, len(shape))
        if op.kind == "Add":
            return _Affine(shape, tuple(dim_add(x, y) for x, y in zip(a_c, b_c)), dim_add(a.const, b.const))
        if b.is_scalar or a.is_scalar:
            k, t = (b.const, a_c) if b.is_scalar else (a.const, b_c)
            return _Affine(shape, tuple(dim_mul(x, k) for x in t), dim_mul(a.const, b.const))
    return None


def _aligned(a: _Affine, rank: int) -> tuple:
    """`a`'s coefficients over a broadcast result of `rank` (a broadcast axis contributes 0)."""
    pad = rank - len(a.shape)
    return (0,) * pad + tuple(0 if d == 1 else k for d, k in zip(a.shape, a.coefs))


def _is_key_index(v: Value, t) -> bool:
    """`v` is ``[1, 1, 1, T]`` holding ``j`` at ``[0, 0, 0, j]``."""
    a = _affine(v)
    return a is not None and a.shape == (1, 1, 1, t) and a.coefs[3] == 1 and a.const == 0


def _mask_input(v: Value, rw: Rewriter) -> Value | None:
    """The graph input ``attention_mask [B, T]`` that `v` (``[B, 1, 1, T]`` bool) gathers as
    ``mask[b, j] != 0``: reshapes of ``Gather(Flatten(Cast(mask → bool)), b·T + j)``
    (a reshape keeps the row-major order, so ``v[b, 0, 0, j]`` is the gather's
    element at the same (b, j) when both have the non-unit dims (B, T))."""
    want = _nonunit(v.type.shape)
    while v.producer is not None and v.producer.kind in _VIEWS and v.producer.operands[0] is not None:
        v = v.producer.operands[0]
    if _nonunit(v.type.shape) != want:
        return None
    g = v.producer
    if g is None or g.kind != "Gather" or int(g.attrs.get("axis", 0)) != 0:
        return None
    flat, idx = g.operands
    f = flat.producer
    if f is None or f.kind not in ("Flatten", "Reshape") or flat.type.rank != 2 or flat.type.shape[1] != 1:
        return None
    mb = f.operands[0]
    cast = mb.producer
    m = cast.operands[0] if cast is not None and cast.kind == "Cast" and mb.type.dtype == DType.bool else mb
    if m.type.rank != 2 or all(m is not x for x in rw.graph.inputs):
        return None
    b, t = m.type.shape
    a = _affine(idx)
    if a is None or a.shape[:1] != (b,) or a.shape[-1] != t or any(d != 1 for d in a.shape[1:-1]):
        return None
    if a.coefs[0] not in (t, 0 if b == 1 else t) or a.coefs[-1] != 1 or a.const != 0:
        return None
    return m


def _positions(rw: Rewriter, q: Value, before: Op) -> Value | None:
    """``q`` (``[1, 1, S, 1]``) as its rank-1 source ``[S]`` (a view)."""
    v = q
    while v.type.rank > 1:
        src = _view_of(v)
        if src is None:
            break
        v = src
    if v.type.rank == 1:
        return v
    shape = rw.const(np.array([-1], np.int64), name=f"{q.name}_flat_shape")
    r = rw.add_op("Reshape", [q, shape], before=before)
    return r.result if r.result.type.rank == 1 else None


def _additive(rw: Rewriter, keep: Value) -> tuple[Op, float] | None:
    """The ``Where(keep, 0, neg)`` that is `keep`'s only user, with its fill."""
    if not rw.single_use(keep) or rw.is_output(keep):
        return None
    w = keep.uses[0].op
    if w.kind != "Where" or w.operands[0] is not keep or not w.result.type.dtype.is_float:
        return None
    zero, neg = const_of(w.operands[1]), const_of(w.operands[2])
    if zero is None or neg is None or zero.size != 1 or neg.size != 1 or float(zero.reshape(-1)[0]) != 0.0:
        return None
    fill = float(neg.reshape(-1)[0])
    return (w, fill) if fill < -1e30 and w.result.type.shape == keep.type.shape else None


def fuse_causal_mask(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """``And(LessOrEqual(kv, q), pad)`` (either order) ==> ``fused.causal_mask``."""
    if len(op.operands) != 2 or op.result.type.rank != 4:
        return False
    for causal, pad in (op.operands, op.operands[::-1]):
        le = causal.producer
        if le is None or le.kind not in ("LessOrEqual", "GreaterOrEqual"):
            continue
        kv, q = le.operands if le.kind == "LessOrEqual" else le.operands[::-1]
        m = _mask_input(pad, rw)
        if m is None or not _is_key_index(kv, m.type.shape[1]) or q.type.rank != 4:
            continue
        if q.type.shape[:2] != (1, 1) or q.type.shape[3] != 1 or q.type.dtype not in (DType.i64, DType.i32):
            continue
        add = _additive(rw, op.result)
        root = add[0] if add else op
        pos = _positions(rw, q, root)
        if pos is None:
            continue
        attrs = {"dtype": root.result.type.dtype.value, "masked": add[1]} if add else {}
        if not rw.replace_with(root, "fused.causal_mask", [m, pos],
                               {**attrs, "name": root.attrs.get("name", root.result.name)}):
            return False
        ctx.count("fusion", "causal_mask")
        return True
    return False
