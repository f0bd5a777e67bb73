"""fuse-attention: scaled dot-product attention into one ``fused.attention`` op.

The pattern of transformers' (sdpa-like) exports, rooted at the last MatMul:

    MatMul(P, V')                         P = Softmax(X, axis=-1)
                                            or Where(IsNaN(Softmax(X)), 0, Softmax(X))   (nan_guard = 1)
    X  = Add(scores, mask) | scores       mask: additive, broadcast to the scores without enlarging them
    scores = MatMul(Q', K') [·c | /c]*    scale constants on the product
    Q' = Q [·c | /c]*                     scale constants on q (the exports split √scale over q and k)
    K' = Kᵀ through [·c | /c | Transpose(0, 1, 3, 2) | repeat]*
    V' = V  through [repeat]
    repeat = Reshape([B, Hkv·g, L, D], Expand([B, Hkv, g, L, D], Unsqueeze(axis 2)))   (GQA's repeat_kv)

becomes ``fused.attention(Q, K, V, mask) {scale = Π c}`` reading the un-repeated K
and V (`ir.ops.attention`); a K that arrives already transposed (``[B, H, D, L]``)
gets a Transpose.  Legal when the scores, the masked scores, the Softmax (its
IsNaN guard's two uses aside) and the guard have no other use and are not graph
outputs; the ops on q, k and v may have other uses (they then stay for them).
A scale applied after the mask would scale the mask too: not matched.

Before / after (LLaMA, 4 query heads over 2 KV heads)::

    %u  = Unsqueeze(%k, %c2) : (tensor<Bx2xLx16xf32>, tensor<1xi64>) -> tensor<Bx2x1xLx16xf32>
    %e  = Expand(%u, %s5) : (...) -> tensor<Bx2x2xLx16xf32>
    %kr = Reshape(%e, %s4) : (...) -> tensor<Bx4xLx16xf32>
    %kt = Transpose(%kr) {perm = [0, 1, 3, 2]} : (...) -> tensor<Bx4x16xLxf32>
    %qs = Mul(%q, %half) : (tensor<Bx4xSx16xf32>, tensor<f32>) -> tensor<Bx4xSx16xf32>
    %ks = Mul(%kt, %half) : (...) -> tensor<Bx4x16xLxf32>
    %s  = MatMul(%qs, %ks) : (...) -> tensor<Bx4xSxLxf32>
    %x  = Add(%s, %mask) : (tensor<Bx4xSxLxf32>, tensor<Bx1xSxLxf32>) -> tensor<Bx4xSxLxf32>
    %p  = Softmax(%x) {axis = -1} : (...) -> tensor<Bx4xSxLxf32>
    %n  = IsNaN(%p) : (...) -> tensor<Bx4xSxLxbool>
    %pg = Where(%n, %zero, %p) : (...) -> tensor<Bx4xSxLxf32>
    %vr = ... repeat of %v ...
    %o  = MatMul(%pg, %vr) : (...) -> tensor<Bx4xSx16xf32>
  ==>
    %o = fused.attention(%q, %k, %v, %mask) {nan_guard = 1, scale = 0.25}
       : (tensor<Bx4xSx16xf32>, tensor<Bx2xLx16xf32>, tensor<Bx2xLx16xf32>, tensor<Bx1xSxLxf32>) -> tensor<Bx4xSx16xf32>

The causal + padding mask the exports build for it becomes one
``fused.causal_mask`` (`passes._causal_mask`).

Statistics: ``fusion.attention`` per fused op, ``fusion.causal_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ir.core import Graph, Op, Value
from ir.registry import TypeInferenceError
from passes._causal_mask import fuse_causal_mask
from passes._conv_fold import const_of
from passes._rewrite import Rewriter, RuleTable, rewrite
from passes.base import Pass, PassContext, register

__all__ = ["RULES", "FuseAttention"]

_SWAP_LAST = [0, 1, 3, 2]


def _producer(v: Value | None, kind: str) -> Op | None:
    p = v.producer if v is not None else None
    return p if p is not None and p.kind == kind else None


def _scalar(v: Value | None) -> float | None:
    """The value of a one-element float constant."""
    c = const_of(v)
    if c is None or c.size != 1 or c.dtype.kind != "f":
        return None
    return float(c.reshape(-1)[0])


def _scale_step(v: Value) -> tuple[Value, float] | None:
    """``v = x * c``, ``c * x`` or ``x / c`` with a one-element constant `c` (the
    product keeps `x`'s type): ``(x, factor)``."""
    p = v.producer
    if p is None or p.kind not in ("Mul", "Div") or len(p.operands) != 2:
        return None
    sides = ((0, 1), (1, 0)) if p.kind == "Mul" else ((0, 1),)
    for i, j in sides:
        x, c = p.operands[i], _scalar(p.operands[j])
        if x is not None and c is not None and x.type == v.type and (p.kind == "Mul" or c != 0.0):
            return x, (c if p.kind == "Mul" else 1.0 / c)
    return None


def _unrepeat(v: Value) -> tuple[Value, int] | None:
    """``v = Reshape(Expand(Unsqueeze(x, axis 2)))`` repeating each of `x`'s heads
    ``g`` times in place (``[B, H, L, D] -> [B, H·g, L, D]``): ``(x, g)``."""
    r = _producer(v, "Reshape")
    e = _producer(r.operands[0], "Expand") if r is not None else None
    u = _producer(e.operands[0], "Unsqueeze") if e is not None else None
    if u is None or u.operands[0] is None:
        return None
    x = u.operands[0]
    xs, us, es, vs = x.type.shape, u.result.type.shape, e.result.type.shape, v.type.shape  # type: ignore[union-attr]
    if len(xs) != 4 or us != xs[:2] + (1,) + xs[2:] or len(es) != 5 or vs is None or len(vs) != 4:
        return None
    g, h = es[2], xs[1]
    if not isinstance(g, int) or es[:2] != xs[:2] or es[3:] != xs[2:] or vs[0] != xs[0] or vs[2:] != xs[2:]:
        return None
    if not (isinstance(h, int) and vs[1] == h * g or g == 1 and vs[1] == h):
        return None
    return x, g


def _key(v: Value) -> tuple[Value, bool, int, float] | None:
    """Walk up the key operand of q·kᵀ through scales, last-two-axes Transposes and
    a repeat: ``(source, transposed, g, scale)``; `transposed` when the source is
    ``[B, H, L, D]`` (the product reads its transpose)."""
    transposed, g, scale = False, 1, 1.0
    for _ in range(8):
        step = _scale_step(v)
        if step is not None:
            v, f = step
            scale *= f
            continue
        t = _producer(v, "Transpose")
        if t is not None and list(t.attrs.get("perm") or []) == _SWAP_LAST:
            v, transposed = t.operands[0], not transposed  # type: ignore[assignment]
            continue
        rep = _unrepeat(v) if g == 1 else None
        if rep is not None:
            v, g = rep
            continue
        break
    return (v, transposed, g, scale) if v.type.rank == 4 else None


def _probs(rw: Rewriter, p: Value) -> tuple[Op, int] | None:
    """The Softmax behind the probabilities `p` and whether the NaN guard wraps it."""
    if not rw.single_use(p):
        return None
    sm = _producer(p, "Softmax")
    if sm is not None:
        return sm, 0
    w = _producer(p, "Where")
    if w is None or len(w.operands) != 3:
        return None
    cond, zero, y = w.operands
    sm, isnan = _producer(y, "Softmax"), _producer(cond, "IsNaN")
    if sm is None or isnan is None or isnan.operands[0] is not y or _scalar(zero) != 0.0 or w.result.type != y.type:
        return None
    if rw.is_output(y) or len(y.uses) != 2 or not rw.single_use(cond):  # type: ignore[union-attr]
        return None
    return sm, 1


def _scores(rw: Rewriter, x: Value) -> tuple[Op, Value | None, float] | None:
    """``x = [scores ·c…] + mask`` (or without the mask) with `scores` a MatMul:
    ``(MatMul, mask, scale)``; every step single-use."""
    mask = None
    add = _producer(x, "Add")
    if add is not None and len(add.operands) == 2:
        for i in (0, 1):
            s, m = add.operands[i], add.operands[1 - i]
            if s is not None and m is not None and s.type == x.type and rw.single_use(s) \
                    and s.producer is not None and s.producer.kind in ("MatMul", "Mul", "Div"):
                x, mask = s, m
                break
        else:
            return None
    scale = 1.0
    for _ in range(8):
        mm = _producer(x, "MatMul")
        if mm is not None:
            return mm, mask, scale
        step = _scale_step(x)
        if step is None or not rw.single_use(step[0]):
            return None
        x, f = step
        scale *= f
    return None


def fuse_attention(rw: Rewriter, root: Op, ctx: PassContext) -> bool:
    p, vr = root.operands[0], root.operands[1]
    if p is None or vr is None or p.type.rank != 4:
        return False
    probs = _probs(rw, p)
    if probs is None:
        return False
    sm, guard = probs
    x = sm.operands[0]
    if sm.attrs.get("axis", -1) not in (-1, 3) or x is None or not rw.single_use(x):
        return False
    found = _scores(rw, x)
    if found is None:
        return False
    qk, mask, scale = found
    q, kt = qk.operands[0], qk.operands[1]
    if q is None or kt is None or q.type.rank != 4:
        return False
    while (step := _scale_step(q)) is not None:
        q, f = step
        scale *= f
    key = _key(kt)
    if key is None:
        return False
    k, transposed, gk, kscale = key
    v, gv = _unrepeat(vr) or (vr, 1)
    if gk != gv:
        return False
    if not transposed:  # the source is [B, H, D, L]: the op reads keys as [B, H, L, D]
        k = rw.add_op("Transpose", [k], {"perm": _SWAP_LAST}, before=root).result
    operands = [q, k, v] + ([mask] if mask is not None else [])
    attrs = {"scale": float(scale * kscale), "nan_guard": guard}
    if "name" in root.attrs:
        attrs["name"] = root.attrs["name"]
    try:
        new = rw.add_op("fused.attention", operands, attrs, before=root)
    except TypeInferenceError:
        new = None
    if new is None or new.result.type != root.result.type:
        if new is not None:
            rw.erase(new)
        if not transposed:
            rw.erase(k.producer)  # type: ignore[arg-type]
        return False
    rw.replace_op(root, [new.result], inherit_names=True)
    ctx.count("fusion", "attention")
    return True


RULES: RuleTable = {"MatMul": [fuse_attention], "And": [fuse_causal_mask]}


@register
@dataclass
class FuseAttention(Pass):
    """Attention fusion (see module doc)."""

    name: ClassVar[str] = "fuse-attention"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        return rewrite(graph, RULES, ctx)
