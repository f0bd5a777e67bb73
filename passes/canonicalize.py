"""canonicalize: put the graph into the one form later passes expect.

Rules (a table, applied to a fixed point by `passes._rewrite.apply_rules`):

- constant folding: an op whose operands are all constants is evaluated with
  `onnx.reference` and becomes a ``const``;
- shape arithmetic: ``Shape`` of a statically shaped value (and ``Gather`` of
  static dims out of a ``Shape``) folds, so exporters' Shape→Gather→Concat→
  Reshape chains collapse to a constant target shape;
- Identity, inference Dropout, same-dtype Cast and no-op Reshape are removed;
- BatchNormalization folds into the preceding Conv's weights and bias (when the
  Conv result has no other user) or becomes a per-channel Mul + Add;
- a Mul or Add of a per-channel constant right after a Conv (the scale layers
  caffe2 exports after its BatchNorm, or a BN that became Mul + Add) folds into
  the Conv's weights and bias the same way;
- chains of constant scales and shifts merge into one Mul and one Add, and a
  positive per-channel scale before a Relu whose users are all Convs moves into
  those Convs' weights (relu(s·x + t) = s·relu(x + t/s) for s > 0);
- an AveragePool (padding not counted) and a 1x1 Conv commute — both are
  linear, the pool's weights sum to one so the bias survives — and are ordered
  so the Conv runs on the smaller image or the pool on fewer channels;
- Gemm is normalized to MatMul (+ Add): transB/alpha are folded into a constant
  B, beta into a constant C, so one fusion rule covers torch's and skl2onnx's
  Linear layers;
- dead ops are removed.

Before / after (``canonicalize``)::

    %w  = const() {value = dense_resource<"w"> : tensor<10x64xf32>} ...
    %y  = Gemm(%x, %w, %b) {alpha = 1.0, beta = 1.0, transA = 0, transB = 1} : ... -> tensor<Nx10xf32>
    %z  = Identity(%y) ...
  ==>
    %w_t = const() {value = dense_resource<"w_t"> : tensor<64x10xf32>} ...
    %y_mm = MatMul(%x, %w_t) : ... -> tensor<Nx10xf32>
    %z = Add(%y_mm, %b) : ... -> tensor<Nx10xf32>
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ir.core import Graph, Op, Value
from ir.types import DType
from passes._onnx_eval import evaluate_op, onnx_evaluable
from passes._rewrite import RuleTable, apply_rules, is_output, refresh_types, replace_op, single_use
from passes.base import Pass, PassContext, register

__all__ = ["MAX_FOLD_ELEMENTS", "RULES", "Canonicalize"]

# Folding must not turn a small graph into a huge constant (Expand, ConstantOfShape, Tile).
MAX_FOLD_ELEMENTS = 1 << 22


def _const(v: Value | None) -> np.ndarray | None:
    if v is None or v.producer is None or v.producer.kind != "const":
        return None
    return v.producer.attrs["value"]


def _forward(graph: Graph, op: Op, v: Value, ctx: PassContext, what: str) -> bool:
    """Replace `op`'s single result by `v`; graph outputs keep their names, so
    forwarding a graph input (or another output) to an output is not done."""
    r = op.results[0]
    if is_output(graph, r) and (v.producer is None or is_output(graph, v)):
        return False
    if any(x.uses or is_output(graph, x) for x in op.results[1:]):
        return False
    if r.type != v.type:
        return False
    replace_op(graph, op, [v] + list(op.results[1:]) if len(op.results) > 1 else [v])
    ctx.count("canonicalize", what)
    return True


# -- constant folding --------------------------------------------------------------
def fold_constants(graph: Graph, op: Op, ctx: PassContext) -> bool:
    if not op.operands or not onnx_evaluable(op) or getattr(op, "_unfoldable", False):
        return False
    if all(v is None for v in op.operands) or any(v is not None and _const(v) is None for v in op.operands):
        return False
    for r in op.results:
        if r.type.is_static and r.type.numel > MAX_FOLD_ELEMENTS:
            return False
    try:
        outs = evaluate_op(op, [_const(v) for v in op.operands])
    except Exception as e:  # noqa: BLE001 - an op onnx.reference cannot run stays as it is
        ctx.log.debug("canonicalize: cannot fold %s: %s", op.kind, e)
        op._unfoldable = True
        return False
    new: list[Value] = []
    for r, a in zip(op.results, outs):
        want = r.type
        if want.dtype is not DType.str and a.dtype != want.dtype.numpy:
            a = a.astype(want.dtype.numpy)
        if a.ndim != want.rank or any(isinstance(d, int) and d != s for d, s in zip(want.shape, a.shape)):
            op._unfoldable = True
            ctx.log.warning("canonicalize: %s folded to shape %s, its type says %s; not folded",
                            op.kind, a.shape, want)
            return False
        if a.size > MAX_FOLD_ELEMENTS:
            return False
        new.append(graph.const(np.ascontiguousarray(a), name=r.name))
    replace_op(graph, op, new, inherit_names=True)
    ctx.count("canonicalize", "folded_constants")
    return True


# -- shape arithmetic -----------------------------------------------------------------
def _shape_dims(op: Op) -> list:
    """The dims a ``Shape`` op returns (ints or symbols)."""
    shape = list(op.operands[0].type.shape)
    start, end = op.attrs.get("start", 0), op.attrs.get("end")
    return shape[slice(start, end)]


def fold_shape(graph: Graph, op: Op, ctx: PassContext) -> bool:
    dims = _shape_dims(op)
    if not all(isinstance(d, int) for d in dims):
        return False
    replace_op(graph, op, [graph.const(np.array(dims, np.int64), name=op.result.name)], inherit_names=True)
    ctx.count("canonicalize", "folded_shapes")
    return True


def fold_gather_of_shape(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """Gather(Shape(x), idx) when the gathered dims of x are static (x may
    have a symbolic batch dim elsewhere)."""
    src = op.operands[0].producer
    idx = _const(op.operands[1])
    if src is None or src.kind != "Shape" or idx is None or op.attrs.get("axis", 0) != 0:
        return False
    dims = _shape_dims(src)
    picked = [dims[int(i)] for i in idx.reshape(-1)]
    if not all(isinstance(d, int) for d in picked):
        return False
    arr = np.array(picked, np.int64).reshape(idx.shape)
    replace_op(graph, op, [graph.const(arr, name=op.result.name)], inherit_names=True)
    ctx.count("canonicalize", "folded_shapes")
    return True


# -- removals -----------------------------------------------------------------------------
def remove_identity(graph: Graph, op: Op, ctx: PassContext) -> bool:
    return op.operands[0] is not None and _forward(graph, op, op.operands[0], ctx, "removed_identity")


def remove_dropout(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """Inference Dropout is the identity (its mask result, if used, is not)."""
    if len(op.operands) > 2 and op.operands[2] is not None:
        training = _const(op.operands[2])
        if training is None or bool(training.reshape(-1)[0]):
            return False
    return _forward(graph, op, op.operands[0], ctx, "removed_dropout")


def remove_noop_cast(graph: Graph, op: Op, ctx: PassContext) -> bool:
    return op.operands[0].type == op.result.type and _forward(graph, op, op.operands[0], ctx, "removed_noop")


def remove_noop_reshape(graph: Graph, op: Op, ctx: PassContext) -> bool:
    x = op.operands[0]
    return (x.type.is_static and x.type == op.result.type
            and _forward(graph, op, x, ctx, "removed_noop"))


# -- BatchNormalization ---------------------------------------------------------------------
def _bn_params(op: Op) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) per channel in float64, or None if BN is not foldable."""
    if op.attrs.get("training_mode", 0) or any(r.uses for r in op.results[1:]):
        return None
    params = [_const(v) for v in op.operands[1:5]]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    scale = gamma / np.sqrt(var + float(op.attrs.get("epsilon", 1e-5)))
    return scale, beta - mean * scale


def bn_into_conv(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """Conv(x, W, b) → BN  ==>  Conv(x, W·s, (b-mean)·s + beta)."""
    x = op.operands[0]
    conv = x.producer
    if conv is None or conv.kind != "Conv" or not single_use(graph, x):
        return False
    if any(is_output(graph, r) for r in op.results[1:]):
        return False
    w = _const(conv.operands[1])
    b = _const(conv.operands[2]) if len(conv.operands) > 2 else None
    if w is None or (len(conv.operands) > 2 and conv.operands[2] is not None and b is None):
        return False
    p = _bn_params(op)
    if p is None or p[0].size != w.shape[0]:
        return False
    scale, shift = p
    w2 = (w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    b0 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64).reshape(-1)
    b2 = (b0 * scale + shift).astype(w.dtype)
    wv = graph.const(w2, name=f"{conv.operands[1].name}_bn")
    bv = graph.const(b2, name=f"{conv.result.name}_bias")
    new = graph.add_op("Conv", [conv.operands[0], wv, bv], dict(conv.attrs), before=op)
    replace_op(graph, op, [new.result] + list(op.results[1:]), inherit_names=True)
    ctx.count("canonicalize", "bn_into_conv")
    return True


def bn_to_mul_add(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """BN(x) with constant statistics  ==>  Add(Mul(x, s), t), s/t shaped [C,1,..]."""
    x = op.operands[0]
    if x.type.rank < 2 or any(is_output(graph, r) for r in op.results[1:]):
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
    sv = graph.const(scale.reshape(shape).astype(dt), name=f"{op.result.name}_scale")
    tv = graph.const(shift.reshape(shape).astype(dt), name=f"{op.result.name}_shift")
    mul = graph.add_op("Mul", [x, sv], before=op)
    add = graph.add_op("Add", [mul.result, tv], before=op)
    if add.result.type != op.result.type:
        graph.erase(add)
        graph.erase(mul)
        return False
    replace_op(graph, op, [add.result] + list(op.results[1:]), inherit_names=True)
    ctx.count("canonicalize", "bn_to_mul_add")
    return True


def _conv_and_channel_const(graph: Graph, op: Op) -> tuple[Op, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(conv, per-output-channel constant [C] in float64, W, b) when `op` combines a
    single-use Conv result with a constant that varies along the channel axis only."""
    for i in (0, 1):
        x, k = op.operands[i], _const(op.operands[1 - i])
        conv = x.producer
        if conv is None or conv.kind != "Conv" or k is None or op.result.type != x.type:
            continue
        if not single_use(graph, x) or is_output(graph, x) or x.type.dtype.numpy.kind != "f":
            continue
        w = _const(conv.operands[1])
        has_b = len(conv.operands) > 2 and conv.operands[2] is not None
        b = _const(conv.operands[2]) if has_b else None
        if w is None or (has_b and b is None):
            continue
        cout, rank = w.shape[0], x.type.rank
        if k.ndim > rank:
            continue
        kk = k.reshape((1,) * (rank - k.ndim) + k.shape)  # right-aligned as broadcasting does
        if any(d != 1 for j, d in enumerate(kk.shape) if j != 1) or kk.shape[1] not in (1, cout):
            continue
        return conv, np.broadcast_to(kk.reshape(-1).astype(np.float64), (cout,)), w, b
    return None


def _refold_conv(graph: Graph, op: Op, conv: Op, w: np.ndarray | None, b: np.ndarray, tag: str) -> None:
    """`op` becomes Conv(x, w, b) (w None: the Conv's own weights)."""
    wv = conv.operands[1] if w is None else graph.const(w, name=f"{conv.operands[1].name}_{tag}")
    bv = graph.const(b, name=f"{conv.result.name}_{tag}_bias")
    new = graph.add_op("Conv", [conv.operands[0], wv, bv], dict(conv.attrs), before=op)
    replace_op(graph, op, [new.result], inherit_names=True)


def scale_into_conv(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """Mul(Conv(x, W, b), s) with s per output channel  ==>  Conv(x, W·s, b·s)."""
    hit = _conv_and_channel_const(graph, op)
    if hit is None:
        return False
    conv, k, w, b = hit
    w2 = (w.astype(np.float64) * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    b2 = ((np.zeros(w.shape[0]) if b is None else b.astype(np.float64).reshape(-1)) * k).astype(w.dtype)
    _refold_conv(graph, op, conv, w2, b2, "scaled")
    ctx.count("canonicalize", "scale_into_conv")
    return True


def shift_into_conv(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """Add(Conv(x, W, b), t) with t per output channel  ==>  Conv(x, W, b + t)."""
    hit = _conv_and_channel_const(graph, op)
    if hit is None:
        return False
    conv, k, w, b = hit
    b2 = ((np.zeros(w.shape[0]) if b is None else b.astype(np.float64).reshape(-1)) + k).astype(w.dtype)
    _refold_conv(graph, op, conv, None, b2, "shifted")
    ctx.count("canonicalize", "shift_into_conv")
    return True


# -- affine chains -----------------------------------------------------------------------------
def _var_and_const(op: Op) -> tuple[Value, np.ndarray] | None:
    """(x, k) when `op` is a binary op of a non-constant x and a float constant k."""
    for i in (0, 1):
        x, k = op.operands[i], _const(op.operands[1 - i])
        if k is not None and _const(x) is None and k.dtype.kind == "f":
            return x, k
    return None


def _affine_op(graph: Graph, kind: str, x: Value, k: np.ndarray, op: Op, name: str) -> Op:
    kv = graph.const(k.astype(op.result.type.dtype.numpy), name=name)
    return graph.add_op(kind, [x, kv], before=op)


def _replace_if_same_type(graph: Graph, op: Op, new: Op, extra: list[Op], ctx: PassContext, what: str) -> bool:
    """`op` becomes `new` when their result types agree; otherwise `new` and the
    `extra` ops built for it are erased and nothing changes."""
    if new.result.type != op.result.type:
        for o in [new, *extra]:
            graph.erase(o)
        return False
    replace_op(graph, op, [new.result], inherit_names=True)
    ctx.count("canonicalize", what)
    return True


def merge_affine(graph: Graph, op: Op, ctx: PassContext) -> bool:
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
    if inner is None or inner.kind not in ("Mul", "Add") or not single_use(graph, y):
        return False
    hit = _var_and_const(inner)
    if hit is None:
        return False
    x, k1 = hit
    a, b = k1.astype(np.float64), k2.astype(np.float64)
    if inner.kind == op.kind:
        new = _affine_op(graph, op.kind, x, a * b if op.kind == "Mul" else a + b, op, f"{op.result.name}_k")
        return _replace_if_same_type(graph, op, new, [new.operands[1].producer], ctx, "merge_affine")
    if inner.kind == "Add" and op.kind == "Mul":
        mul = _affine_op(graph, "Mul", x, b, op, f"{op.result.name}_s")
        add = _affine_op(graph, "Add", mul.result, a * b, op, f"{op.result.name}_t")
        return _replace_if_same_type(graph, op, add, [add.operands[1].producer, mul, mul.operands[1].producer],
                                     ctx, "merge_affine")
    return False


def _per_channel(k: np.ndarray, rank: int, c: int) -> np.ndarray | None:
    """k as a [C] float64 vector when it broadcasts along axis 1 only of a rank-`rank` tensor."""
    if k.ndim > rank or rank < 2:
        return None
    kk = k.reshape((1,) * (rank - k.ndim) + k.shape)
    if any(d != 1 for j, d in enumerate(kk.shape) if j != 1) or kk.shape[1] not in (1, c):
        return None
    return np.broadcast_to(kk.reshape(-1).astype(np.float64), (c,))


def scale_through_relu(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """Relu(Mul(x, s) [+ t]) feeding only Convs, s > 0 per input channel  ==>
    Relu(x [+ t/s]) feeding Convs whose weights are scaled by s per input channel.

    relu(s·x + t) = s·relu(x + t/s) when s > 0, and a Conv is linear in each
    input channel (its zero padding stays zero), so the scale moves into the
    weights and the Mul disappears (DenseNet's pre-activation BatchNorm)."""
    r = op.results[0]
    if is_output(graph, r) or not r.uses or r.type.dtype.numpy.kind != "f":
        return False
    c = r.type.shape[1] if r.type.rank >= 2 else None
    if not isinstance(c, int):
        return False
    convs = [u.op for u in r.uses]
    for conv in convs:
        if conv.kind != "Conv" or conv.operands[0] is not r or any(o is r for o in conv.operands[1:]):
            return False
        w = _const(conv.operands[1])
        if w is None or w.dtype.kind != "f" or w.ndim != r.type.rank:
            return False
    v = op.operands[0]
    add = v.producer if v.producer is not None and v.producer.kind == "Add" and single_use(graph, v) else None
    shift = None
    if add is not None:
        hit = _var_and_const(add)
        if hit is None:
            return False
        v, t = hit
        shift = _per_channel(t, r.type.rank, c)
        if shift is None:
            return False
    mul = v.producer
    if mul is None or mul.kind != "Mul" or not single_use(graph, v):
        return False
    hit = _var_and_const(mul)
    if hit is None:
        return False
    x, sk = hit
    s = _per_channel(sk, r.type.rank, c)
    if s is None or not np.all(s > 0) or not np.all(np.isfinite(s)) or x.type != v.type:
        return False
    dt = r.type.dtype.numpy
    src = x
    if shift is not None:
        tv = graph.const((shift / s).reshape((c,) + (1,) * (r.type.rank - 2)).astype(dt),
                         name=f"{add.result.name}_unscaled")
        src = graph.add_op("Add", [x, tv], before=op).result
        if src.type != v.type:
            graph.erase(src.producer)
            return False
    relu = graph.add_op("Relu", [src], before=op)
    for conv in convs:
        w = _const(conv.operands[1])
        g = int(conv.attrs.get("group", 1) or 1)
        cg, mg = w.shape[1], w.shape[0] // g
        per_in = s.reshape(g, cg)  # input channel g*cg + j is column j of group g's filters
        factor = np.repeat(per_in, mg, axis=0).reshape((w.shape[0], cg) + (1,) * (w.ndim - 2))
        wv = graph.const((w.astype(np.float64) * factor).astype(w.dtype), name=f"{conv.operands[1].name}_in_scaled")
        conv.set_operand(1, wv)
        conv.set_operand(0, relu.result)
    replace_op(graph, op, [relu.result], inherit_names=True)
    ctx.count("canonicalize", "scale_through_relu")
    return True


# -- average pool and pointwise conv ----------------------------------------------------------
def _pointwise_conv(conv: Op) -> bool:
    """A 1x1 Conv that mixes channels only (stride 1, no padding): it commutes with
    any per-channel weighted average over space whose weights sum to one."""
    if conv.kind != "Conv":
        return False
    w = _const(conv.operands[1])
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


def _swap(graph: Graph, first: Op, second: Op, ctx: PassContext, what: str) -> bool:
    """second(first(x)) ==> first'(second'(x)) for a 1x1 Conv and an AveragePool (both
    keep their attributes and constants); the new ops' types are checked by inference."""
    x = first.operands[0]
    a = graph.add_op(second.kind, [x, *second.operands[1:]], dict(second.attrs), before=second)
    b = graph.add_op(first.kind, [a.result, *first.operands[1:]], dict(first.attrs), before=second)
    return _replace_if_same_type(graph, second, b, [a], ctx, what)


def pool_before_conv(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """AveragePool(Conv1x1(x))  ==>  Conv1x1(AveragePool(x)) when the pool shrinks the
    image (the Conv then runs on fewer pixels: DenseNet's transition layers)."""
    conv = op.operands[0].producer
    if conv is None or not _mean_pool(op) or not _pointwise_conv(conv) or not single_use(graph, conv.result):
        return False
    after, before = op.result.type.shape[2:], conv.result.type.shape[2:]
    if not all(isinstance(d, int) for d in (*after, *before)) or math.prod(after) >= math.prod(before):
        return False
    return _swap(graph, conv, op, ctx, "pool_before_conv")


def conv_before_pool(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """Conv1x1(AveragePool(x)) with a same-size pool and fewer output than input
    channels  ==>  AveragePool(Conv1x1(x)): the pool averages fewer channels
    (Inception's pool-projection branches)."""
    pool = op.operands[0].producer
    if pool is None or not _mean_pool(pool) or not _pointwise_conv(op) or not single_use(graph, pool.result):
        return False
    if pool.result.type.shape[2:] != pool.operands[0].type.shape[2:]:
        return False
    cout, cin = op.result.type.shape[1], pool.result.type.shape[1]
    if not (isinstance(cout, int) and isinstance(cin, int)) or cout >= cin:
        return False
    return _swap(graph, pool, op, ctx, "conv_before_pool")


# -- Gemm ------------------------------------------------------------------------------------
def gemm_to_matmul(graph: Graph, op: Op, ctx: PassContext) -> bool:
    """Gemm(A, B, C) {transB, alpha, beta}  ==>  Add(MatMul(A, alpha·B'), beta·C).

    Legal when transA = 0 and every attribute can be folded into a constant
    (or is already neutral)."""
    a, b = op.operands[0], op.operands[1]
    c = op.operands[2] if len(op.operands) > 2 else None
    alpha, beta = float(op.attrs.get("alpha", 1.0)), float(op.attrs.get("beta", 1.0))
    if op.attrs.get("transA", 0):
        return False
    bc, cc = _const(b), _const(c)
    trans_b = bool(op.attrs.get("transB", 0))
    if bc is None and (trans_b or alpha != 1.0):
        return False
    if c is not None and cc is None and beta != 1.0:
        return False
    if bc is not None and (trans_b or alpha != 1.0):
        w = bc.T if trans_b else bc
        if alpha != 1.0:
            w = (w * alpha).astype(bc.dtype)
        b = graph.const(np.ascontiguousarray(w), name=f"{b.name}_t" if trans_b else f"{b.name}_scaled")
    mm = graph.add_op("MatMul", [a, b], before=op, names=[f"{op.result.name}_mm"])
    out = mm.result
    if c is not None and beta != 0.0:
        if cc is not None and beta != 1.0:
            c = graph.const((cc * beta).astype(cc.dtype), name=f"{c.name}_scaled")
        out = graph.add_op("Add", [mm.result, c], before=op).result
    if out.type != op.result.type:
        # only a broadcast corner case (C larger than M x N) gets here; leave the Gemm
        for o in ([out.producer] if out is not mm.result else []) + [mm]:
            graph.erase(o)
        return False
    replace_op(graph, op, [out], inherit_names=True)
    ctx.count("canonicalize", "gemm_to_matmul")
    return True


RULES: RuleTable = {
    "Shape": [fold_shape],
    "Gather": [fold_gather_of_shape],
    "Identity": [remove_identity],
    "Dropout": [remove_dropout],
    "Cast": [remove_noop_cast],
    "Reshape": [remove_noop_reshape],
    "BatchNormalization": [bn_into_conv, bn_to_mul_add],
    "Mul": [scale_into_conv, merge_affine],
    "Add": [shift_into_conv, merge_affine],
    "Relu": [scale_through_relu],
    "AveragePool": [pool_before_conv],
    "Conv": [conv_before_pool],
    "Gemm": [gemm_to_matmul],
    "*": [fold_constants],
}


@register
@dataclass
class Canonicalize(Pass):
    """Constant folding, shape folding, no-op removal, BN folding, Gemm
    normalization and dead-code removal, to a fixed point (see module doc)."""

    name: ClassVar[str] = "canonicalize"
    fold: bool = True  # constant folding on/off (shape folding always runs)

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        table = RULES if self.fold else {k: v for k, v in RULES.items() if k != "*"}
        changed = False
        for _ in range(16):
            step = apply_rules(graph, table, ctx)
            step |= refresh_types(graph)
            changed |= step
            if not step:
                break
        return changed
