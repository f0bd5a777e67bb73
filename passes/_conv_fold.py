"""Folding a per-channel scale and shift into the Conv before it — one rule,
shared by canonicalize (BatchNorm, caffe2's scale layers, a BN that became
Mul + Add) and fuse (a bias Add after a Conv):

    %y = Conv(%x, %w, %b) : ... -> tensor<1x16x8x8xf32>
    %z = Mul(%y, %s) : (tensor<1x16x8x8xf32>, tensor<16x1x1xf32>) -> tensor<1x16x8x8xf32>
  ==>
    %z = Conv(%x, %w_scaled, %b_scaled) : ... -> tensor<1x16x8x8xf32>

with ``w_scaled = w·s`` (per output channel) and ``b_scaled = b·s``; a shift
``t`` adds to the bias.  The sums and products are taken in float64 and rounded
once to the weights' dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ir.core import Op, Value

if TYPE_CHECKING:
    from passes._rewrite import Rewriter

__all__ = ["const_of", "conv_and_channel_const", "fold_into_conv", "per_channel"]


def const_of(v: Value | None) -> np.ndarray | None:
    """The array behind `v` if a ``const`` op defines it."""
    if v is None or v.producer is None or v.producer.kind != "const":
        return None
    return v.producer.attrs["value"]


def per_channel(k: np.ndarray, rank: int, c: int) -> np.ndarray | None:
    """k as a [C] float64 vector when it broadcasts along axis 1 only of a
    rank-`rank` tensor with `c` channels (a single value broadcasts too)."""
    if k.ndim > rank or rank < 2:
        return None
    kk = k.reshape((1,) * (rank - k.ndim) + k.shape)  # right-aligned as broadcasting does
    if any(d != 1 for j, d in enumerate(kk.shape) if j != 1) or kk.shape[1] not in (1, c):
        return None
    return np.broadcast_to(kk.reshape(-1).astype(np.float64), (c,))


def _conv_params(conv: Op) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(W, b) of a Conv whose weights and bias (if any) are constants."""
    w = const_of(conv.operands[1])
    has_b = len(conv.operands) > 2 and conv.operands[2] is not None
    b = const_of(conv.operands[2]) if has_b else None
    if w is None or (has_b and b is None):
        return None
    return w, b


def conv_and_channel_const(rw: Rewriter, op: Op, kinds: tuple[str, ...] = ("Conv",)
                           ) -> tuple[Op, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(conv, per-output-channel constant [C] in float64, W, b) when `op` is a
    binary op of a single-use float Conv result (of a kind in `kinds`, with no
    activation of its own) and a constant that varies along the channel axis only."""
    for i in (0, 1):
        x, k = op.operands[i], const_of(op.operands[1 - i])
        conv = x.producer if x is not None else None
        if conv is None or conv.kind not in kinds or k is None or op.result.type != x.type:
            continue
        if conv.attrs.get("act", "none") != "none":
            continue  # the activation comes before `op`
        if not rw.single_use(x) or x.type.dtype.numpy.kind != "f":
            continue
        params = _conv_params(conv)
        if params is None:
            continue
        w, b = params
        kc = per_channel(k, x.type.rank, w.shape[0])
        if kc is None:
            continue
        return conv, kc, w, b
    return None


def fold_into_conv(rw: Rewriter, op: Op, conv: Op, scale: np.ndarray | None, shift: np.ndarray | None, *,
                   weight_name: str, bias_name: str) -> Op:
    """`op` (reading `conv`'s result) becomes Conv(x, W·scale, b·scale + shift);
    a None `scale` keeps the Conv's own weights.  Returns the new Conv."""
    w, b = _conv_params(conv)  # type: ignore[misc]
    if scale is None:
        wv = conv.operands[1]
    else:
        w2 = (w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        wv = rw.const(w2, name=weight_name)
    b2 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64).reshape(-1)
    if scale is not None:
        b2 = b2 * scale
    if shift is not None:
        b2 = b2 + shift
    bv = rw.const(b2.astype(w.dtype), name=bias_name)
    new = rw.add_op(conv.kind, [conv.operands[0], wv, bv], dict(conv.attrs), before=op)
    rw.replace_op(op, [new.result], inherit_names=True)
    return new
