"""canonicalize's per-channel affine rules: BatchNormalization, constant scales
and shifts (folded into a Conv, merged along a chain, moved through a Relu),
and the AveragePool / 1x1 Conv swap.  `passes.canonicalize` lists them in its
rule table; the Conv folding itself is `passes._conv_fold`, shared with fuse.

    %y = Conv(%x, %w, %b) ...
    %z = BatchNormalization(%y, %gamma, %beta, %mean, %var) ...
  ==>
    %z = Conv(%x, %w_bn, %y_bias) ...
"""

from __future__ import annotations

import math

import numpy as np

from ir.core import Op, Value
from passes._conv_fold import const_of, conv_and_channel_const, fold_into_conv, per_channel
from passes._rewrite import Rewriter
from passes.base import PassContext

__all__ = [
    "bn_into_conv", "bn_to_mul_add", "conv_before_pool", "merge_affine", "pool_before_conv", "scale_into_conv",
    "scale_through_relu", "shift_into_conv",
]


# -- BatchNormalization ---------------------------------------------------------------------
def _bn_params(op: Op) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) per channel in float64, or None if BN is not foldable."""
    if op.attrs.get("training_mode", 0) or any(r.uses for r in op.results[1:]):
        return None
    params = [const_of(v) for v in op.operands[1:5]]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    scale = gamma / np.sqrt(var + float(op.attrs.get("epsilon", 1e-5)))
    return scale, beta - mean * scale


def bn_into_conv(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Conv(x, W, b) → BN  ==>  Conv(x, W·s, (b-mean)·s + beta)."""
    x = op.operands[0]
    conv = x.producer
    if conv is None or conv.kind != "Conv" or not rw.single_use(x):
        return False
    if any(rw.is_output(r) for r in op.results[1:]):
        return False
    w = const_of(conv.operands[1])
    b = const_of(conv.operands[2]) if len(conv.operands) > 2 else None
    if w is None or (len(conv.operands) > 2 and conv.operands[2] is not None and b is None):
        return False
    p = _bn_params(op)
    if p is None or p[0].size != w.shape[0]:
        return False
    fold_into_conv(rw, op, conv, p[0], p[1], weight_name=f"{conv.operands[1].name}_bn",
                   bias_name=f"{conv.result.name}_bias")
    ctx.count("canonicalize", "bn_into_conv")
    return True


def bn_to_mul_add(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """BN(x) with constant statistics  ==>  Add(Mul(x, s), t), s/t shaped [C,1,..]."""
    x = op.operands[0]
    if x.type.rank < 2 or any(rw.is_output(r) for r in op.results[1:]):
        return False
    p = _bn_params(op)
    if p is None:
        return False
    scale, shift = p
    c = x.type.shape[1]
    if isinstance(c, int) and c != scale.size:
        return False
    shape = (scale.size,) + (1,) * (x.type.rank - 2)
    dt = x.type.dtype.numpy
    sv = rw.const(scale.reshape(shape).astype(dt), name=f"{op.result.name}_scale")
    tv = rw.const(shift.reshape(shape).astype(dt), name=f"{op.result.name}_shift")
    mul = rw.add_op("Mul", [x, sv], before=op)
    add = rw.add_op("Add", [mul.result, tv], before=op)
    if add.result.type != op.result.type:
        rw.erase(add)
        rw.erase(mul)
        return False
    rw.replace_op(op, [add.result] + list(op.results[1:]), inherit_names=True)
    ctx.count("canonicalize", "bn_to_mul_add")
    return True


# -- per-channel constants after a Conv ---------------------------------------------------------
def scale_into_conv(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Mul(Conv(x, W, b), s) with s per output channel  ==>  Conv(x, W·s, b·s)."""
    hit = conv_and_channel_const(rw, op)
    if hit is None:
        return False
    conv, k = hit[0], hit[1]
    fold_into_conv(rw, op, conv, k, None, weight_name=f"{conv.operands[1].name}_scaled",
                   bias_name=f"{conv.result.name}_scaled_bias")
    ctx.count("canonicalize", "scale_into_conv")
    return True


def shift_into_conv(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Add(Conv(x, W, b), t) with t per output channel  ==>  Conv(x, W, b + t)."""
    hit = conv_and_channel_const(rw, op)
    if hit is None:
        return False
    conv, k = hit[0], hit[1]
    fold_into_conv(rw, op, conv, None, k, weight_name="", bias_name=f"{conv.result.name}_shifted_bias")
    ctx.count("canonicalize", "shift_into_conv")
    return True


# -- affine chains -----------------------------------------------------------------------------
def _var_and_const(op: Op) -> tuple[Value, np.ndarray] | None:
    """(x, k) when `op` is a binary op of a non-constant x and a float constant k."""
    for i in (0, 1):
        x, k = op.operands[i], const_of(op.operands[1 - i])
        if k is not None and const_of(x) is None and k.dtype.kind == "f":
            return x, k
    return None


def _affine_op(rw: Rewriter, kind: str, x: Value, k: np.ndarray, op: Op, name: str) -> Op:
    kv = rw.const(k.astype(op.result.type.dtype.numpy), name=name)
    return rw.add_op(kind, [x, kv], before=op)


def _replace_if_same_type(rw: Rewriter, op: Op, new: Op, extra: list[Op], ctx: PassContext, what: str) -> bool:
    """`op` becomes `new` when their result types agree; otherwise `new` and the
    `extra` ops built for it are erased and nothing changes."""
    if new.result.type != op.result.type:
        for o in [new, *extra]:
            rw.erase(o)
        return False
    rw.replace_op(op, [new.result], inherit_names=True)
    ctx.count("canonicalize", what)
    return True


def merge_affine(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Chains of per-tensor/per-channel constant scales and shifts collapse:

        Mul(Mul(x, s1), s2)  ==>  Mul(x, s1·s2)
        Add(Add(x, t1), t2)  ==>  Add(x, t1 + t2)
        Mul(Add(x, t), s)    ==>  Add(Mul(x, s), t·s)

    (caffe2 exports a BatchNorm then a scale layer: two Mul/Add pairs per
    pre-activation that become one).  The inner op must have no other user, and
    the folded constant must not widen the result (checked on the new type)."""
    outer = _var_and_const(op)
    if outer is None:
        return False
    y, k2 = outer
    inner = y.producer
    if inner is None or inner.kind not in ("Mul", "Add") or not rw.single_use(y):
        return False
    hit = _var_and_const(inner)
    if hit is None:
        return False
    x, k1 = hit
    a, b = k1.astype(np.float64), k2.astype(np.float64)
    if inner.kind == op.kind:
        new = _affine_op(rw, op.kind, x, a * b if op.kind == "Mul" else a + b, op, f"{op.result.name}_k")
        return _replace_if_same_type(rw, op, new, [new.operands[1].producer], ctx, "merge_affine")
    if inner.kind == "Add" and op.kind == "Mul":
        mul = _affine_op(rw, "Mul", x, b, op, f"{op.result.name}_s")
        add = _affine_op(rw, "Add", mul.result, a * b, op, f"{op.result.name}_t")
        return _replace_if_same_type(rw, op, add, [add.operands[1].producer, mul, mul.operands[1].producer],
                                     ctx, "merge_affine")
    return False


# -- a positive scale through a Relu into the Convs after it ------------------------------------
def _conv_readers(r: Value) -> list[Op] | None:
    """The users of `r`, when every one is a Conv reading `r` as its input only,
    with constant float weights."""
    convs = [u.op for u in r.uses]
    for conv in convs:
        if conv.kind != "Conv" or conv.operands[0] is not r or any(o is r for o in conv.operands[1:]):
            return None
        w = const_of(conv.operands[1])
        if w is None or w.dtype.kind != "f" or w.ndim != r.type.rank:
            return None
    return convs


def _scale_and_shift(rw: Rewriter, relu: Op, c: int) -> tuple[Value, np.ndarray, Op | None, np.ndarray | None] | None:
    """(x, s, the Add or None, t or None) for Relu(Mul(x, s) [+ t]) with s > 0
    and t per channel, the Mul and Add feeding nothing else."""
    rank = relu.result.type.rank
    v = relu.operands[0]
    add = v.producer if v.producer is not None and v.producer.kind == "Add" and rw.single_use(v) else None
    shift = None
    if add is not None:
        hit = _var_and_const(add)
        if hit is None:
            return None
        v, t = hit
        shift = per_channel(t, rank, c)
        if shift is None:
            return None
    mul = v.producer
    if mul is None or mul.kind != "Mul" or not rw.single_use(v):
        return None
    hit = _var_and_const(mul)
    if hit is None:
        return None
    x, sk = hit
    s = per_channel(sk, rank, c)
    if s is None or not np.all(s > 0) or not np.all(np.isfinite(s)) or x.type != v.type:
        return None
    return x, s, add, shift


def _scale_input_channels(rw: Rewriter, conv: Op, s: np.ndarray) -> None:
    """Multiply `conv`'s weights by `s` per input channel."""
    w = const_of(conv.operands[1])
    g = int(conv.attrs.get("group", 1) or 1)
    cg, mg = w.shape[1], w.shape[0] // g
    per_in = s.reshape(g, cg)  # input channel g*cg + j is column j of group g's filters
    factor = np.repeat(per_in, mg, axis=0).reshape((w.shape[0], cg) + (1,) * (w.ndim - 2))
    wv = rw.const((w.astype(np.float64) * factor).astype(w.dtype), name=f"{conv.operands[1].name}_in_scaled")
    rw.set_operand(conv, 1, wv)


def scale_through_relu(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Relu(Mul(x, s) [+ t]) feeding only Convs, s > 0 per input channel  ==>
    Relu(x [+ t/s]) feeding Convs whose weights are scaled by s per input channel.

    relu(s·x + t) = s·relu(x + t/s) when s > 0, and a Conv is linear in each
    input channel (its zero padding stays zero), so the scale moves into the
    weights and the Mul disappears (DenseNet's pre-activation BatchNorm)."""
    r = op.results[0]
    if rw.is_output(r) or not r.uses or r.type.dtype.numpy.kind != "f":
        return False
    c = r.type.shape[1] if r.type.rank >= 2 else None
    convs = _conv_readers(r) if isinstance(c, int) else None
    hit = _scale_and_shift(rw, op, c) if convs is not None else None
    if hit is None:
        return False
    x, s, add, shift = hit
    src = x
    if shift is not None:
        tv = rw.const((shift / s).reshape((c,) + (1,) * (r.type.rank - 2)).astype(r.type.dtype.numpy),
                      name=f"{add.result.name}_unscaled")
        src = rw.add_op("Add", [x, tv], before=op).result
        if src.type != x.type:
            rw.erase(src.producer)
            return False
    relu = rw.add_op("Relu", [src], before=op)
    for conv in convs:
        _scale_input_channels(rw, conv, s)
        rw.set_operand(conv, 0, relu.result)
    rw.replace_op(op, [relu.result], inherit_names=True)
    ctx.count("canonicalize", "scale_through_relu")
    return True


# -- average pool and pointwise conv ----------------------------------------------------------
def _pointwise_conv(conv: Op) -> bool:
    """A 1x1 Conv that mixes channels only (stride 1, no padding): it commutes with
    any per-channel weighted average over space whose weights sum to one."""
    if conv.kind != "Conv":
        return False
    w = const_of(conv.operands[1])
    if w is None or any(v != 1 for v in w.shape[2:]):
        return False
    nsp = w.ndim - 2
    return (all(v == 1 for v in (conv.attrs.get("strides") or [1] * nsp))
            and not any(conv.attrs.get("pads") or [0]) and conv.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))


def _mean_pool(pool: Op) -> bool:
    """An AveragePool whose window weights sum to one everywhere (padding not counted)."""
    return pool.kind == "AveragePool" and (not pool.attrs.get("count_include_pad", 0)
                                           or (not any(pool.attrs.get("pads") or [0])
                                               and pool.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")
                                               and not pool.attrs.get("ceil_mode", 0)))


def _swap(rw: Rewriter, first: Op, second: Op, ctx: PassContext, what: str) -> bool:
    """second(first(x)) ==> first'(second'(x)) for a 1x1 Conv and an AveragePool (both
    keep their attributes and constants); the new ops' types are checked by inference."""
    x = first.operands[0]
    a = rw.add_op(second.kind, [x, *second.operands[1:]], dict(second.attrs), before=second)
    b = rw.add_op(first.kind, [a.result, *first.operands[1:]], dict(first.attrs), before=second)
    return _replace_if_same_type(rw, second, b, [a], ctx, what)


def pool_before_conv(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """AveragePool(Conv1x1(x))  ==>  Conv1x1(AveragePool(x)) when the pool shrinks the
    image (the Conv then runs on fewer pixels: DenseNet's transition layers)."""
    conv = op.operands[0].producer
    if conv is None or not _mean_pool(op) or not _pointwise_conv(conv) or not rw.single_use(conv.result):
        return False
    after, before = op.result.type.shape[2:], conv.result.type.shape[2:]
    if not all(isinstance(d, int) for d in (*after, *before)) or math.prod(after) >= math.prod(before):
        return False
    return _swap(rw, conv, op, ctx, "pool_before_conv")


def conv_before_pool(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Conv1x1(AveragePool(x)) with a same-size pool and fewer output than input
    channels  ==>  AveragePool(Conv1x1(x)): the pool averages fewer channels
    (Inception's pool-projection branches)."""
    pool = op.operands[0].producer
    if pool is None or not _mean_pool(pool) or not _pointwise_conv(op) or not rw.single_use(pool.result):
        return False
    if pool.result.type.shape[2:] != pool.operands[0].type.shape[2:]:
        return False
    cout, cin = op.result.type.shape[1], pool.result.type.shape[1]
    if not (isinstance(cout, int) and isinstance(cin, int)) or cout >= cin:
        return False
    return _swap(rw, pool, op, ctx, "conv_before_pool")
