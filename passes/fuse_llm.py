"""fuse-llm: the decoder-block fusions of exported LLMs (RMSNorm, LayerNorm, rotary
embedding, the SiLU-gated MLP's activation, GELU), each into one Vector op.

Patterns (rooted at the chain's last op; every intermediate must have its only uses
inside the chain and not be a graph output; shapes may be symbolic):

    Mul(x, Div(1, Sqrt(Add(ReduceMean(Pow(x, 2), [-1]), eps))))   → fused.rms_norm(x) {epsilon}
        (also Reciprocal(Sqrt(..)), Div(x, Sqrt(..)), Mul(x, x) for the square)
    Mul(w, fused.rms_norm(x))                                     → fused.rms_norm(x, w)  (w const, [D])
    Div(Sub(x, m), Sqrt(Add(ReduceMean(Pow(Sub(x, m), 2)), eps))) with m = ReduceMean(x, [-1])
                                                                  → LayerNormalization(x, 1) {epsilon}
    Mul(LayerNormalization(x, 1), g) / Add(LayerNormalization(x, g), b)
                                                                  → LayerNormalization(x, g[, b])
    Add(Mul(x, cos), Mul(rotate(x), sin))                         → fused.rotary(x, cos, sin) {interleaved}
        rotate_half:      Concat(Neg(Slice(x, D/2:)), Slice(x, :D/2)) on the last axis
        rotate_every_two: Reshape(Concat(Unsqueeze(Neg(Slice(x, 1::2)), -1), Unsqueeze(Slice(x, 0::2), -1)), x's shape)
    Mul-tree {g, Sigmoid(g), up} (or {Swish(g), up})              → fused.swiglu(g, up)
    Mul-tree {x, 0.5, Add(1, Tanh(Mul-tree {√(2/π), Add(x, Mul-tree {0.044715, x³})}))}
                                                                  → Gelu(x) {approximate = "tanh"}
    Mul-tree {x, 0.5, Add(1, Erf(Div(x, √2) | Mul(x, 1/√2)))}     → Gelu(x) {approximate = "none"}

A "Mul-tree" is a product read through single-use Muls in any association and
operand order (``0.5 * x * (1 + t)`` = ``(x * 0.5) * (1 + t)``).  The fused op takes
the root's place, so its operands are all defined before it and no cycle can form.

Each rewrite counts ``ctx.count("fusion", name)``: rms_norm, layer_norm, rotary,
gated_mlp, gelu.  LayerNormalization and Gelu ops the model already had (GPT-2's
exporter emits LayerNormalization) are the fused form themselves: they count too.

Before / after (``fuse-llm``)::

    %p = Pow(%x, %two) : (tensor<"s"x64xf32>, tensor<f32>) -> tensor<"s"x64xf32>
    %m = ReduceMean(%p, %axes) {keepdims = 1} : (tensor<"s"x64xf32>, tensor<1xi64>) -> tensor<"s"x1xf32>
    %a = Add(%m, %eps) : (tensor<"s"x1xf32>, tensor<f32>) -> tensor<"s"x1xf32>
    %r = Sqrt(%a) : (tensor<"s"x1xf32>) -> tensor<"s"x1xf32>
    %i = Div(%one, %r) : (tensor<f32>, tensor<"s"x1xf32>) -> tensor<"s"x1xf32>
    %n = Mul(%x, %i) : (tensor<"s"x64xf32>, tensor<"s"x1xf32>) -> tensor<"s"x64xf32>
    %y = Mul(%w, %n) : (tensor<64xf32>, tensor<"s"x64xf32>) -> tensor<"s"x64xf32>
  ==>
    %y = fused.rms_norm(%x, %w) {epsilon = 1e-06} : (tensor<"s"x64xf32>, tensor<64xf32>) -> tensor<"s"x64xf32>
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ir.core import Graph, Op, Value
from passes._rewrite import Rewriter, RuleTable, rewrite
from passes.base import Pass, PassContext, register

__all__ = ["RULES", "FuseLLM"]

NATIVE = {"LayerNormalization": "layer_norm", "Gelu": "gelu"}  # ONNX ops that are the fused form already
_MAX_FACTORS = 8


# -- small matchers ------------------------------------------------------------------------
def _prod(v: Value | None, kind: str | tuple[str, ...]) -> Op | None:
    p = v.producer if v is not None else None
    kinds = (kind,) if isinstance(kind, str) else kind
    return p if p is not None and p.kind in kinds else None


def _const(v: Value | None) -> np.ndarray | None:
    p = v.producer if v is not None else None
    return p.attrs["value"] if p is not None and p.kind == "const" else None


def _scalar(v: Value | None) -> float | None:
    """A one-element numeric constant as the shortest float that reads back to it
    (a float32 1e-06 is ``1e-06``, not 9.99999997e-07)."""
    c = _const(v)
    if c is None or c.size != 1 or c.dtype.kind not in "fiu":
        return None
    x = c.reshape(-1)[0]
    return float(str(x)) if c.dtype.kind == "f" else float(x)


def _close(a: float | None, b: float, rel: float = 1e-4) -> bool:
    return a is not None and abs(a - b) <= rel * abs(b)


def _is_float(v: Value) -> bool:
    return v.type.dtype.is_float


def _only_used_by(rw: Rewriter, v: Value, ops: Sequence[Op]) -> bool:
    """`v`'s uses are all by `ops` (an intermediate the fused op replaces)."""
    return not rw.is_output(v) and bool(v.uses) and all(any(u.op is o for o in ops) for u in v.uses)


def _last_axis(op: Op, rank: int) -> bool:
    """A keepdims reduction over the last axis only (axes as an attribute or a constant operand)."""
    axes = op.attrs.get("axes")
    if axes is None and len(op.operands) > 1 and op.operands[1] is not None:
        c = _const(op.operands[1])
        axes = None if c is None else [int(a) for a in c.reshape(-1)]
    return (axes is not None and len(axes) == 1 and axes[0] % max(rank, 1) == rank - 1
            and int(op.attrs.get("keepdims", 1)) == 1)


def _other(op: Op, v: Value) -> Value | None:
    """The other operand of a binary op that has `v` as one operand."""
    a, b = op.operands[0], op.operands[1]
    return b if a is v else a if b is v else None


def _square_of(v: Value) -> tuple[Value, Op] | None:
    """(x, op) when `v` is Pow(x, 2) or Mul(x, x)."""
    p = _prod(v, ("Pow", "Mul"))
    if p is None:
        return None
    if p.kind == "Pow" and _scalar(p.operands[1]) == 2.0:
        return p.operands[0], p
    if p.kind == "Mul" and p.operands[0] is p.operands[1]:
        return p.operands[0], p
    return None


def _std(v: Value) -> tuple[Value, float, list[Op]] | None:
    """(y, eps, ops) when `v` is Sqrt(Add(ReduceMean(y over the last axis), eps))."""
    sq = _prod(v, "Sqrt")
    add = _prod(sq.operands[0], "Add") if sq else None
    if add is None:
        return None
    for i in (0, 1):
        mean = _prod(add.operands[i], "ReduceMean")
        eps = _scalar(add.operands[1 - i])
        if mean is not None and eps is not None and _last_axis(mean, mean.operands[0].type.rank):
            return mean.operands[0], eps, [mean, add, sq]
    return None


def _inverse_std(v: Value) -> tuple[Value, float, list[Op]] | None:
    """As `_std`, for Div(1, Sqrt(..)) or Reciprocal(Sqrt(..))."""
    p = _prod(v, ("Div", "Reciprocal"))
    if p is None or (p.kind == "Div" and _scalar(p.operands[0]) != 1.0):
        return None
    s = _std(p.operands[-1])
    return None if s is None else (s[0], s[1], [*s[2], p])


def _factors(rw: Rewriter, root: Op) -> tuple[list[Value], list[Op]] | None:
    """The factors of the product `root` heads, read through single-use Muls; and the Muls."""
    factors: list[Value] = []
    muls: list[Op] = []
    stack = [root]
    while stack:
        m = stack.pop()
        muls.append(m)
        for v in m.operands:
            p = _prod(v, "Mul")
            if p is not None and rw.single_use(v) and v.type.dtype == root.result.type.dtype:
                stack.append(p)
            else:
                factors.append(v)
        if len(factors) + len(stack) > _MAX_FACTORS:
            return None
    return factors, muls


def _split_consts(factors: list[Value]) -> tuple[float, list[Value]] | None:
    """(product of the scalar constants, the other factors)."""
    k, rest = 1.0, []
    for f in factors:
        s = _scalar(f) if _const(f) is not None else None
        if _const(f) is not None and s is None:
            return None  # a non-scalar constant
        if s is not None:
            k *= s
        else:
            rest.append(f)
    return k, rest


def _replace(rw: Rewriter, root: Op, kind: str, operands: list, attrs: dict, ctx: PassContext,
             key: str | None) -> bool:
    """Put `kind(operands)` in `root`'s place when it computes the same type; count it
    as fusion `key` (None: a weight or bias folded into an op already counted)."""
    if "name" in root.attrs:
        attrs = {**attrs, "name": root.attrs["name"]}
    new = rw.add_op(kind, operands, attrs, before=root)
    if new.result.type != root.result.type:  # broadcasting would change the shape: not the same computation
        rw.erase(new)
        return False
    rw.replace_op(root, [new.result], inherit_names=True)
    if key is not None:
        ctx.count("fusion", key)
    return True


# -- RMSNorm ---------------------------------------------------------------------------------
def _rms_chain(rw: Rewriter, root: Op) -> tuple[Value, float] | None:
    """(x, eps) when `root` is Mul(x, inv_std(x^2)) or Div(x, std(x^2)) and the chain is its own."""
    for i in (0, 1) if root.kind == "Mul" else (0,):
        x, other = root.operands[i], root.operands[1 - i]
        found = _inverse_std(other) if root.kind == "Mul" else _std(other)
        if found is None:
            continue
        sq_v, eps, ops = found
        sq = _square_of(sq_v)
        if sq is None or sq[0] is not x or not _is_float(x) or x.type.rank < 1:
            continue
        chain = [sq[1], *ops, root]
        if all(_only_used_by(rw, o.result, chain[k + 1:k + 2]) for k, o in enumerate(chain[:-1])):
            return x, eps
    return None


def fuse_rms_norm(rw: Rewriter, root: Op, ctx: PassContext) -> bool:
    found = _rms_chain(rw, root)
    if found is None:
        return False
    x, eps = found
    return _replace(rw, root, "fused.rms_norm", [x], {"epsilon": eps}, ctx, "rms_norm")


def _row_const(v: Value, x: Value) -> bool:
    """A float constant broadcast along `x`'s last axis only ([D] or [1, .., 1, D])."""
    c = _const(v)
    d = x.type.shape[-1] if x.type.rank else None
    return (c is not None and isinstance(d, int) and c.ndim <= x.type.rank and c.shape[-1:] == (d,)
            and all(s == 1 for s in c.shape[:-1]) and v.type.dtype == x.type.dtype)


def fold_norm_weight(rw: Rewriter, mul: Op, ctx: PassContext) -> bool:
    """Mul(fused.rms_norm(x), w) → fused.rms_norm(x, w); Mul(LayerNormalization(x, 1), g) →
    LayerNormalization(x, g), for a per-row-element constant w/g."""
    for i in (0, 1):
        n_v, w = mul.operands[i], mul.operands[1 - i]
        n = _prod(n_v, ("fused.rms_norm", "LayerNormalization"))
        if n is None or not rw.single_use(n_v) or len(n.results) != 1 or not _row_const(w, n_v):
            continue
        if n.kind == "fused.rms_norm" and len(n.operands) == 1:
            return _replace(rw, mul, n.kind, [n.operands[0], w], dict(n.attrs), ctx, None)
        if n.kind == "LayerNormalization" and len(n.operands) == 2 and _all_ones(n.operands[1]) \
                and int(n.attrs.get("axis", -1)) in (-1, n_v.type.rank - 1):
            return _replace(rw, mul, n.kind, [n.operands[0], _as_row(rw, w)], dict(n.attrs), ctx, None)
    return False


def _all_ones(v: Value) -> bool:
    c = _const(v)
    return c is not None and bool(np.all(c == 1))


def _as_row(rw: Rewriter, v: Value) -> Value:
    """`v` as a [D] constant (LayerNormalization's scale/bias shape)."""
    c = _const(v)
    return v if c.ndim == 1 else rw.const(c.reshape(-1), f"{v.name}_row")  # type: ignore[union-attr]


# -- LayerNorm (decomposed) -------------------------------------------------------------------------
def fuse_layer_norm(rw: Rewriter, div: Op, ctx: PassContext) -> bool:
    """Div(Sub(x, m), Sqrt(Add(ReduceMean(Pow(Sub(x, m), 2)), eps))) with m = ReduceMean(x)."""
    d_v = div.operands[0]
    sub = _prod(d_v, "Sub")
    std = _std(div.operands[1])
    if sub is None or std is None:
        return False
    sq_v, eps, ops = std
    sq = _square_of(sq_v)
    x, m_v = sub.operands
    mean = _prod(m_v, "ReduceMean")
    if (sq is None or sq[0] is not d_v or mean is None or mean.operands[0] is not x or not _is_float(x)
            or not _last_axis(mean, x.type.rank) or not isinstance(x.type.shape[-1], int)):
        return False
    if not (_only_used_by(rw, m_v, [sub]) and _only_used_by(rw, d_v, [sq[1], div])
            and _only_used_by(rw, sq[1].result, [ops[0]]) and _only_used_by(rw, ops[0].result, [ops[1]])
            and _only_used_by(rw, ops[1].result, [ops[2]]) and _only_used_by(rw, ops[2].result, [div])):
        return False
    ones = rw.const(np.ones(x.type.shape[-1], dtype=x.type.dtype.numpy), f"{div.result.name}_scale")
    return _replace(rw, div, "LayerNormalization", [x, ones], {"axis": -1, "epsilon": eps}, ctx, "layer_norm")


def fold_norm_bias(rw: Rewriter, add: Op, ctx: PassContext) -> bool:
    """Add(LayerNormalization(x, g), b) → LayerNormalization(x, g, b) for a per-row-element constant b."""
    for i in (0, 1):
        n_v, b = add.operands[i], add.operands[1 - i]
        n = _prod(n_v, "LayerNormalization")
        if (n is not None and len(n.operands) == 2 and len(n.results) == 1 and rw.single_use(n_v)
                and _row_const(b, n_v) and int(n.attrs.get("axis", -1)) in (-1, n_v.type.rank - 1)):
            return _replace(rw, add, n.kind, [*n.operands, _as_row(rw, b)], dict(n.attrs), ctx, None)
    return False


# -- rotary embedding ------------------------------------------------------------------------------
_BIG = 2**62


def _slice_last(rw: Rewriter, v: Value, x: Value) -> tuple[int, int, int] | None:
    """(start, stop, step), normalized, when `v` is a single-use Slice of `x` on its last axis."""
    s = _prod(v, "Slice")
    if s is None or s.operands[0] is not x or not rw.single_use(v):
        return None
    rank, d = x.type.rank, x.type.shape[-1]
    vals = [_const(s.operands[i]) if i < len(s.operands) and s.operands[i] is not None else None
            for i in range(1, 5)]
    starts, ends, axes, steps = vals
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if len(s.operands) > 3 and s.operands[3] is not None and (axes is None or axes.size != 1):
        return None
    axis = int(axes.reshape(-1)[0]) if axes is not None else 0
    step = int(steps.reshape(-1)[0]) if steps is not None else 1
    if axis % rank != rank - 1 or step < 1 or not isinstance(d, int):
        return None

    def norm(i: int) -> int:
        return max(0, min(d, i + d if i < 0 else i))

    return norm(int(starts.reshape(-1)[0])), norm(min(int(ends.reshape(-1)[0]), _BIG)), step


def _concat_last(v: Value) -> Op | None:
    c = _prod(v, "Concat")
    return c if c is not None and len(c.operands) == 2 and c.attrs["axis"] % v.type.rank == v.type.rank - 1 else None


def _rotate_half(rw: Rewriter, r: Value, x: Value) -> bool:
    """r = Concat(Neg(Slice(x, D/2:)), Slice(x, :D/2)) on the last axis."""
    c = _concat_last(r)
    d = x.type.shape[-1] if x.type.rank else None
    if c is None or not isinstance(d, int) or d % 2 or not rw.single_use(r):
        return False
    neg = _prod(c.operands[0], "Neg")
    if neg is None or not rw.single_use(c.operands[0]):
        return False
    hi, lo = _slice_last(rw, neg.operands[0], x), _slice_last(rw, c.operands[1], x)
    return hi == (d // 2, d, 1) and lo == (0, d // 2, 1)


def _unsqueezed_last(rw: Rewriter, v: Value) -> Value | None:
    """u when `v` is a single-use Unsqueeze(u) adding a new last axis."""
    u = _prod(v, "Unsqueeze")
    if u is None or not rw.single_use(v):
        return None
    axes = u.attrs.get("axes")
    if axes is None and len(u.operands) > 1:
        c = _const(u.operands[1])
        axes = None if c is None else [int(a) for a in c.reshape(-1)]
    rank = v.type.rank
    return u.operands[0] if axes is not None and len(axes) == 1 and axes[0] % rank == rank - 1 else None


def _rotate_every_two(rw: Rewriter, r: Value, x: Value) -> bool:
    """r = Reshape(Concat(Unsqueeze(Neg(Slice(x, 1::2)), -1), Unsqueeze(Slice(x, 0::2), -1)), x's shape)."""
    rs = _prod(r, "Reshape")
    d = x.type.shape[-1] if x.type.rank else None
    if rs is None or r.type != x.type or not rw.single_use(r) or not isinstance(d, int) or d % 2:
        return False
    c = _concat_last(rs.operands[0])
    if c is None or not rw.single_use(rs.operands[0]) or c.result.type.shape[-2:] != (d // 2, 2):
        return False
    a, b = _unsqueezed_last(rw, c.operands[0]), _unsqueezed_last(rw, c.operands[1])
    neg = _prod(a, "Neg")
    if neg is None or b is None or not rw.single_use(a):
        return False
    return _slice_last(rw, neg.operands[0], x) == (1, d, 2) and _slice_last(rw, b, x) == (0, d, 2)


def fuse_rotary(rw: Rewriter, add: Op, ctx: PassContext) -> bool:
    """Add(Mul(x, cos), Mul(rotate(x), sin)) → fused.rotary(x, cos, sin)."""
    for i in (0, 1):
        m1, m2 = _prod(add.operands[i], "Mul"), _prod(add.operands[1 - i], "Mul")
        if m1 is None or m2 is None or not (rw.single_use(add.operands[0]) and rw.single_use(add.operands[1])):
            return False
        for j in (0, 1):
            r, sin = m2.operands[j], m2.operands[1 - j]
            for k in (0, 1):
                x, cos = m1.operands[k], m1.operands[1 - k]
                if not _is_float(x) or x.type.rank < 1 or x.type != add.result.type:
                    continue
                if _rotate_half(rw, r, x):
                    return _replace(rw, add, "fused.rotary", [x, cos, sin], {"interleaved": 0}, ctx, "rotary")
                if _rotate_every_two(rw, r, x):
                    return _replace(rw, add, "fused.rotary", [x, cos, sin], {"interleaved": 1}, ctx, "rotary")
    return False


# -- SiLU-gated MLP and GELU (products) ------------------------------------------------------------------
def fuse_swiglu(rw: Rewriter, root: Op, ctx: PassContext) -> bool:
    """A product {g, Sigmoid(g), up} or {Swish(g), up} (alpha 1) → fused.swiglu(g, up)."""
    got = _factors(rw, root)
    if got is None or any(_const(f) is not None for f in got[0]) or not _is_float(root.result):
        return False
    factors = got[0]
    for f in factors:
        p = _prod(f, ("Sigmoid", "Swish"))
        if p is None or not rw.single_use(f) or (p.kind == "Swish" and float(p.attrs.get("alpha", 1.0)) != 1.0):
            continue
        g = p.operands[0]
        rest = [v for v in factors if v is not f]
        if p.kind == "Sigmoid":
            if g not in rest:
                continue
            rest.remove(g)
        if len(rest) == 1 and g.type == root.result.type:
            return _replace(rw, root, "fused.swiglu", [g, rest[0]], {}, ctx, "gated_mlp")
    return False


SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _tanh_arg_ok(rw: Rewriter, v: Value, x: Value) -> list[Op] | None:
    """The Muls/Adds/Pows of √(2/π)·(x + 0.044715·x³), when they are all the chain's own."""
    p = _prod(v, "Mul")
    if p is None or not rw.single_use(v):
        return None
    got = _factors(rw, p)
    split = _split_consts(got[0]) if got else None
    if split is None or not _close(split[0], SQRT_2_OVER_PI) or len(split[1]) != 1:
        return None
    inner = split[1][0]
    add = _prod(inner, "Add")
    if add is None or not rw.single_use(inner) or x not in add.operands:
        return None
    cube_v = _other(add, x)
    cube = _prod(cube_v, "Mul")
    if cube is None or not rw.single_use(cube_v):
        return None
    got = _factors(rw, cube)
    split = _split_consts(got[0]) if got else None
    if split is None or not _close(split[0], 0.044715):
        return None
    ops = [*got[1], add]  # type: ignore[index]
    xs = split[1]
    if len(xs) == 1:
        pw = _prod(xs[0], "Pow")
        if pw is None or pw.operands[0] is not x or _scalar(pw.operands[1]) != 3.0 or not rw.single_use(xs[0]):
            return None
        ops.append(pw)
    elif not all(f is x for f in xs) or len(xs) != 3:
        return None
    return ops


def _erf_arg_ok(rw: Rewriter, v: Value, x: Value) -> bool:
    """v = x / √2 or x · (1/√2)."""
    p = _prod(v, ("Div", "Mul"))
    if p is None or not rw.single_use(v) or x not in p.operands:
        return False
    if p.kind == "Div":
        return p.operands[0] is x and _close(_scalar(p.operands[1]), math.sqrt(2))
    return _close(_scalar(_other(p, x)), 1 / math.sqrt(2))


def fuse_gelu(rw: Rewriter, root: Op, ctx: PassContext) -> bool:
    """A product {x, 0.5, Add(1, Tanh(√(2/π)(x + 0.044715x³)) | Erf(x/√2))} → Gelu(x)."""
    got = _factors(rw, root)
    split = _split_consts(got[0]) if got else None
    if split is None or not _close(split[0], 0.5) or len(split[1]) != 2 or not _is_float(root.result):
        return False
    for i in (0, 1):
        x, one_plus = split[1][i], split[1][1 - i]
        add = _prod(one_plus, "Add")
        if add is None or not rw.single_use(one_plus) or x.type != root.result.type:
            continue
        for j in (0, 1):
            t_v = add.operands[j]
            t = _prod(t_v, ("Tanh", "Erf"))
            if t is None or _scalar(add.operands[1 - j]) != 1.0 or not rw.single_use(t_v):
                continue
            if t.kind == "Tanh" and _tanh_arg_ok(rw, t.operands[0], x) is not None:
                return _replace(rw, root, "Gelu", [x], {"approximate": "tanh"}, ctx, "gelu")
            if t.kind == "Erf" and _erf_arg_ok(rw, t.operands[0], x):
                return _replace(rw, root, "Gelu", [x], {"approximate": "none"}, ctx, "gelu")
    return False


RULES: RuleTable = {
    "Mul": [fuse_rms_norm, fold_norm_weight, fuse_gelu, fuse_swiglu],
    "Div": [fuse_layer_norm, fuse_rms_norm],  # x - mean over its own rms is a LayerNorm first
    "Add": [fuse_rotary, fold_norm_bias],
}


@register
@dataclass
class FuseLLM(Pass):
    """Decoder-block fusions: RMSNorm, LayerNorm, rotary, SiLU-gated MLP, GELU (see module doc)."""

    name: ClassVar[str] = "fuse-llm"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        for op in graph.ops:
            key = NATIVE.get(op.kind)
            if key is not None:
                ctx.count("fusion", key)
        return rewrite(graph, RULES, ctx)
