"""canonicalize: put the graph into the one form later passes expect.

Rules (a table, applied to a fixed point by the worklist driver
`passes._rewrite.rewrite`; the per-channel affine family lives in
`passes._canonicalize_affine`):

- constant folding: an op whose operands are all constants is evaluated with
  `onnx.reference` and becomes a ``const``;
- shape arithmetic: ``Shape`` of a statically shaped value (and ``Gather`` of
  static dims out of a ``Shape``) folds, so exporters' Shape→Gather→Concat→
  Reshape chains collapse to a constant target shape;
- Identity, inference Dropout, same-dtype Cast, a Reshape or Expand to the
  operand's shape, a Slice that keeps everything, x·1, x+0, x∧true and x∨false
  are removed (symbolic shapes too: equal polynomials are equal at every binding);
  an op that broadcasts reads an Expand's operand when its result stays the same;
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

Under ``weights_meta_only`` (a plan that reads no weight: `passes._meta`) no rule
reads a weight mapped from external data: folding an op of one gives
placeholders of the results' types, a weight is never compared with 1 or 0,
Gemm's transposed or scaled B is a placeholder, and the affine family
(`AFFINE_RULES`: BN, scale and shift folding) is left out.

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

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ir.core import Graph, Op, Value
from ir.ops.shape import fold_symbolically, shape_value_op
from ir.registry import foldable, infer_types
from ir.symbolic import parse_dim
from ir.types import DType, TensorType
from passes._canonicalize_affine import (
    bn_into_conv,
    bn_to_mul_add,
    conv_before_pool,
    merge_affine,
    pool_before_conv,
    scale_into_conv,
    scale_through_relu,
    shift_into_conv,
)
from passes._conv_fold import const_of as _const
from passes._meta import placeholder, unread
from passes._rewrite import Rewriter, RuleTable, refresh_types, rewrite
from passes.base import Pass, PassContext, register
from runtime.kernels.aicpu import evaluate_op

__all__ = ["MAX_FOLD_ELEMENTS", "RULES", "Canonicalize"]

# Folding must not turn a small graph into a huge constant (Expand, ConstantOfShape, Tile).
MAX_FOLD_ELEMENTS = 1 << 22


def _forward(rw: Rewriter, op: Op, v: Value, ctx: PassContext, what: str) -> bool:
    """Replace `op`'s single result by `v`; graph outputs keep their names, so
    forwarding a graph input (or another output) to an output is not done."""
    r = op.results[0]
    if rw.is_output(r) and (v.producer is None or rw.is_output(v)):
        return False
    if any(x.uses or rw.is_output(x) for x in op.results[1:]):
        return False
    if r.type != v.type:
        return False
    rw.replace_op(op, [v] + list(op.results[1:]) if len(op.results) > 1 else [v])
    ctx.count("canonicalize", what)
    return True


# -- constant folding --------------------------------------------------------------
def fold_constants(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """An op of constants becomes constants, evaluated by onnx.reference; one it
    cannot evaluate (or that evaluates to the wrong shape) is not tried again."""
    if not op.operands or not foldable(op):
        return False
    if all(v is None for v in op.operands) or any(v is not None and _const(v) is None for v in op.operands):
        return False
    for r in op.results:
        if r.type.is_static and r.type.numel > MAX_FOLD_ELEMENTS:
            return False
    if any(unread(_const(v), ctx.options) for v in op.operands if v is not None):
        return _fold_unread(rw, op, ctx)
    try:
        outs = evaluate_op(op, [_const(v) for v in op.operands])
    except Exception as e:  # noqa: BLE001 - an op onnx.reference cannot run stays as it is
        ctx.log.debug("canonicalize: cannot fold %s: %s", op.kind, e)
        rw.give_up(op, fold_constants)
        return False
    new: list[Value] = []
    for r, a in zip(op.results, outs):
        want = r.type
        if want.dtype is not DType.str and a.dtype != want.dtype.numpy:
            a = a.astype(want.dtype.numpy)
        if a.ndim != want.rank or any(isinstance(d, int) and d != s for d, s in zip(want.shape, a.shape)):
            rw.give_up(op, fold_constants)
            ctx.log.warning("canonicalize: %s folded to shape %s, its type says %s; not folded",
                            op.kind, a.shape, want)
            return False
        if a.size > MAX_FOLD_ELEMENTS:
            return False
        # not np.ascontiguousarray: it makes a 0-d result shape (1,), against its type
        new.append(rw.const(a if a.flags.c_contiguous else a.copy(order="C"), name=r.name))
    rw.replace_op(op, new, inherit_names=True)
    ctx.count("canonicalize", "folded_constants")
    return True


def _fold_unread(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """`fold_constants` of an op reading a weight a meta-only plan must not read: its
    results become placeholders of their (static) types."""
    if not all(r.type.is_static and r.type.dtype is not DType.str for r in op.results):
        rw.give_up(op, fold_constants)
        return False
    new = [rw.const(placeholder(r.type.shape, r.type.dtype.numpy), name=r.name) for r in op.results]
    rw.replace_op(op, new, inherit_names=True)
    ctx.count("canonicalize", "folded_constants")
    return True


# -- shape arithmetic -----------------------------------------------------------------
def _shape_dims(op: Op) -> list:
    """The dims a ``Shape`` op returns (ints or symbols)."""
    shape = list(op.operands[0].type.shape)
    start, end = op.attrs.get("start", 0), op.attrs.get("end")
    return shape[slice(start, end)]


def fold_shape(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    dims = _shape_dims(op)
    if not all(isinstance(d, int) for d in dims):
        return False
    rw.replace_op(op, [rw.const(np.array(dims, np.int64), name=op.result.name)], inherit_names=True)
    ctx.count("canonicalize", "folded_shapes")
    return True


def fold_gather_of_shape(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
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
    rw.replace_op(op, [rw.const(arr, name=op.result.name)], inherit_names=True)
    ctx.count("canonicalize", "folded_shapes")
    return True


def fold_shape_program(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Shape arithmetic on the input dims (`ir.symfold`) becomes one ``sym.dims``
    op, or a constant when every element is known; the ops reading it then get
    exact symbolic types.

        %s = Shape(%x) : (tensor<"N"x64xf32>) -> tensor<2xi64>
        %n = Gather(%s, %zero) {axis = 0} : (tensor<2xi64>, tensor<i64>) -> tensor<i64>
      ==>
        %n = sym.dims() {dims = ["N"], dtype = "i64", shape = []} : () -> tensor<i64>"""
    if len(op.results) != 1 or op.kind in ("const", "sym.dims"):
        return False
    val = fold_symbolically(op)
    if val is None:
        return False
    held = shape_value_op(val, op.result.type.dtype, op.result.name)
    new = (rw.const(held.attrs["value"], name=op.result.name) if held.kind == "const"  # constants go first
           else rw.graph.insert(held, before=op).result)
    rw.replace_op(op, [new], inherit_names=True)
    ctx.count("canonicalize", "folded_shape_program")
    return True


# -- removals -----------------------------------------------------------------------------
def remove_identity(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    return op.operands[0] is not None and _forward(rw, op, op.operands[0], ctx, "removed_identity")


def remove_dropout(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Inference Dropout is the identity (its mask result, if used, is not)."""
    if len(op.operands) > 2 and op.operands[2] is not None:
        training = _const(op.operands[2])
        if training is None or bool(training.reshape(-1)[0]):
            return False
    return _forward(rw, op, op.operands[0], ctx, "removed_dropout")


_NEUTRAL = {"Mul": (1, "f"), "Add": (0, "f"), "And": (True, "b"), "Or": (False, "b")}


def remove_neutral(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """x * 1, x + 0, x and true, x or false (a constant that does not broadcast x) ==> x."""
    neutral, kind = _NEUTRAL[op.kind]
    for i in (0, 1):
        c = _const(op.operands[1 - i])
        if c is not None and not unread(c, ctx.options) and c.size and c.dtype.kind == kind and bool((c == neutral).all()) \
                and _forward(rw, op, op.operands[i], ctx, "removed_noop"):
            return True
    return False


def remove_noop_cast(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    return op.operands[0].type == op.result.type and _forward(rw, op, op.operands[0], ctx, "removed_noop")


def _known(t: TensorType) -> bool:
    """Every dim is a number or a polynomial of symbols: two such types that print
    the same have the same shape at every binding."""
    return all(isinstance(d, int) or parse_dim(d) is not None for d in t.shape)


def remove_noop_reshape(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Reshape or Expand to the operand's own shape ==> the operand."""
    x = op.operands[0]
    return x.type == op.result.type and _known(x.type) and _forward(rw, op, x, ctx, "removed_noop")


_BROADCASTING = ("MatMul", "Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Less", "LessOrEqual",
                 "Greater", "GreaterOrEqual", "Where", "Max", "Min")


def bypass_expand(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """A user that broadcasts (elementwise ops, MatMul's batch dims) reads an Expand's
    operand directly when its result type stays the same: the broadcast it does
    itself is the Expand's (rotary embeddings expand inv_freq to the batch for a
    batched MatMul)."""
    x = op.operands[0]
    changed = False
    for use in list(op.result.uses):
        user = use.op
        if user.kind not in _BROADCASTING:
            continue
        before = [r.type for r in user.results]
        user.operands[use.index] = x  # a trial: infer the user's types with the operand
        try:
            same = infer_types(user) == before
        except Exception:  # noqa: BLE001 - an operand the user's inference rejects: keep the Expand
            same = False
        user.operands[use.index] = op.result
        if same:
            rw.set_operand(user, use.index, x)
            ctx.count("canonicalize", "bypassed_expand")
            changed = True
    return changed


def remove_noop_slice(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """A Slice with positive steps that keeps every dim's size takes all of it ==> the operand."""
    x = op.operands[0]
    if x.type != op.result.type or not _known(x.type):
        return False
    steps = op.operands[4] if len(op.operands) > 4 else None
    if steps is not None:
        sc = _const(steps)
        if sc is None or not bool((sc > 0).all()):
            return False
    return _forward(rw, op, x, ctx, "removed_noop")


# -- Gemm ------------------------------------------------------------------------------------
def gemm_to_matmul(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
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
        if unread(bc, ctx.options):
            w = placeholder(w.shape, bc.dtype)
        elif alpha != 1.0:
            w = (w * alpha).astype(bc.dtype)
        b = rw.const(w if unread(w, ctx.options) else np.ascontiguousarray(w),
                     name=f"{b.name}_t" if trans_b else f"{b.name}_scaled")
    mm = rw.add_op("MatMul", [a, b], before=op, names=[f"{op.result.name}_mm"])
    out = mm.result
    if c is not None and beta != 0.0:
        if cc is not None and beta != 1.0:
            scaled = placeholder(cc.shape, cc.dtype) if unread(cc, ctx.options) else (cc * beta).astype(cc.dtype)
            c = rw.const(scaled, name=f"{c.name}_scaled")
        out = rw.add_op("Add", [mm.result, c], before=op).result
    if out.type != op.result.type:
        # only a broadcast corner case (C larger than M x N) gets here; leave the Gemm
        for o in ([out.producer] if out is not mm.result else []) + [mm]:
            rw.erase(o)
        return False
    rw.replace_op(op, [out], inherit_names=True)
    ctx.count("canonicalize", "gemm_to_matmul")
    return True


RULES: RuleTable = {
    "Shape": [fold_shape],
    "Gather": [fold_gather_of_shape],
    "Identity": [remove_identity],
    "Dropout": [remove_dropout],
    "Cast": [remove_noop_cast],
    "Reshape": [remove_noop_reshape],
    "Expand": [remove_noop_reshape, bypass_expand],
    "Slice": [remove_noop_slice],
    "And": [remove_neutral],
    "Or": [remove_neutral],
    "BatchNormalization": [bn_into_conv, bn_to_mul_add],
    "Mul": [remove_neutral, scale_into_conv, merge_affine],
    "Add": [remove_neutral, shift_into_conv, merge_affine],
    "Relu": [scale_through_relu],
    "AveragePool": [pool_before_conv],
    "Conv": [conv_before_pool],
    "Gemm": [gemm_to_matmul],
    "*": [fold_constants, fold_shape_program],
}


# the rules that read weights' values to compute new ones (left out of a meta-only plan)
AFFINE_RULES = (bn_into_conv, bn_to_mul_add, scale_into_conv, shift_into_conv, merge_affine, scale_through_relu)


@register
@dataclass
class Canonicalize(Pass):
    """Constant folding, shape folding, no-op removal, BN folding, Gemm
    normalization and dead-code removal, to a fixed point (see module doc)."""

    name: ClassVar[str] = "canonicalize"
    fold: bool = True  # constant folding on/off (shape folding always runs)

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        table = RULES if self.fold else {k: v for k, v in RULES.items() if k != "*"}
        if ctx.options.weights_meta_only:  # the affine family computes new weights from old ones
            table = {k: [r for r in v if r not in AFFINE_RULES] for k, v in table.items()}
        rw = Rewriter(graph)  # one for the run, so an op folding failed on is not tried again
        changed = False
        for _ in range(16):
            step = rewrite(graph, table, ctx, rewriter=rw)
            step |= refresh_types(graph)
            changed |= step
            if not step:
                break
        return changed
