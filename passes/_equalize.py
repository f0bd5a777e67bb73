"""Activation equalization for the quantize pass: per-channel rescaling between
two Cube layers through ReLU and pooling, so one per-tensor activation scale
fits every channel (Nagel et al., 2019, "Data-Free Quantization", section 4.1,
cross-layer equalization; with the activation's range in place of the first
layer's weight range, as SmoothQuant, Xiao et al., 2023, balances them).

An activation quantized per tensor gets one step, ``amax / 127``, for all its
channels: a channel whose values span a tenth of the tensor's range is
quantized with 13 levels.  For ``B(pool(relu(A x)))`` every op between the two
layers commutes with a positive per-channel scale ``s``, so

    A' = s · A (output channels, bias too)      B' = B / s (its input channels)

computes the same function in float, while the activation between them now has
channel ranges ``s_c r_c``.  With weights per output channel, A's int8 weight
is unchanged (its rows only rescale with their own scale); B's rows mix input
channels, so scaling channel c up makes its weights smaller within each row.
``s_c = sqrt(w_c / r_c)`` (``w_c`` = B's largest weight on channel c, ``r_c`` =
the channel's largest calibration value) balances the two, ``s_c r_c = w_c / s_c``;
``s`` is then normalized so the tensor's own range (``max_c s_c r_c``) is
unchanged.

    %a = fused.conv(%x, %wa, %ba) {act = "relu"}      %a = fused.conv(%x, %wa_eq, %ba_eq) {act = "relu"}
    %p = MaxPool(%a)                             ==>  %p = MaxPool(%a)
    %y = fused.conv(%p, %wb, %bb)                     %y = fused.conv(%p, %wb_eq, %bb)

Legal chains: each op between A and B is declared `HOMOGENEOUS` with a single use,
no value on it is a graph output, and a Flatten (or a Reshape to
``[N, C·H·W]``) maps channel c to its ``H·W`` features of B's input rows.  A
is any Cube layer with a constant weight and a per-channel (or no) bias; B a
MatMul-like layer or an ungrouped Conv.  The layers' result names are kept, so
the accuracy report must divide A's int8 result by ``s`` (`Equalized`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ir.core import Graph, Op
from ir.registry import HOMOGENEOUS, VIEW, lookup

__all__ = ["TINY", "Equalized", "Pair", "equalize", "find_pairs", "scales"]

TINY = 1e-6  # a channel range or weight below this fraction of the largest is left unscaled


def _is_conv(op: Op) -> bool:
    """A layer quantized as ``quant.conv`` (channels on axis 1 of its activations)."""
    d = lookup(op.kind)
    return d is not None and d.quant is not None and d.quant.to == "quant.conv"


def _through(op: Op) -> bool:
    """Commutes with a positive per-channel scale of its input (channel axis 1)."""
    d = lookup(op.kind)
    return d is not None and d.has(HOMOGENEOUS)


def _reshapes(op: Op) -> bool:
    d = lookup(op.kind)
    return d is not None and d.has(VIEW)


@dataclass
class Equalized:
    """A's result after equalization is ``s`` (along `axis`) times the float one."""

    axis: int
    scale: np.ndarray


@dataclass
class Pair:
    a: Op
    b: Op
    per: int  # B input features per channel of A (H·W after a Flatten, else 1)


def _out_axis(op: Op) -> int | None:
    """Axis of the output channel in the weight, or None if the layer cannot be scaled."""
    if _is_conv(op):
        return 0
    if op.kind == "Gemm":
        return None if op.attrs.get("transA") else (0 if op.attrs.get("transB") else 1)
    return 1


def _in_axis(op: Op) -> int | None:
    """Axis of the input channel in B's weight."""
    if _is_conv(op):
        return None if int(op.attrs.get("group", 1) or 1) != 1 else 1
    if op.kind == "Gemm":
        return None if op.attrs.get("transA") else (1 if op.attrs.get("transB") else 0)
    return 0


def _flatten_per(op: Op, channels: int) -> int | None:
    """Features per channel when `op` flattens ``[N, C, ...]`` to ``[N, C·...]``, else None."""
    src, dst = op.operands[0].type.shape, op.result.type.shape  # type: ignore[union-attr]
    if len(src) < 2 or len(dst) != 2 or src[1] != channels or not all(isinstance(d, int) for d in src[1:]):
        return None
    if op.kind == "Flatten" and int(op.attrs.get("axis", 1)) != 1:
        return None
    per = int(np.prod(src[2:], dtype=np.int64))
    return per if dst[1] == channels * per else None


def _chain(graph: Graph, a: Op, quantized: dict[int, Op]) -> Pair | None:
    """A's single-use chain through `HOMOGENEOUS` ops to a quantized layer B, if legal."""
    wa = a.operand_const(1)
    if wa is None or _out_axis(a) is None or a.attrs.get("act", "none") not in ("none", "relu") \
            or len(a.operands) > 3:  # a residual added inside A would need the same scaling
        return None
    channels = wa.shape[_out_axis(a)]  # type: ignore[index]
    bias = a.operand_const(2) if len(a.operands) > 2 and a.operands[2] is not None else None
    if len(a.operands) > 2 and a.operands[2] is not None and (bias is None or bias.size != channels):
        return None
    outputs = {id(v) for v in graph.outputs}
    v, per, flat = a.results[0], 1, False
    while True:
        if id(v) in outputs or len(v.uses) != 1:
            return None
        user = v.users[0]
        if id(user) in quantized and user.operands[0] is v and user is not a:
            b = user
            break
        if not _through(user) or user.operands[0] is not v or any(r.uses for r in user.results[1:]):
            return None
        if _reshapes(user):
            p = None if flat or not _is_conv(a) else _flatten_per(user, channels)
            if p is None:
                return None
            per, flat = p, True
        v = user.results[0]
    if _in_axis(b) is None or (_is_conv(b) and (flat or not _is_conv(a))):
        return None
    wb = b.operand_const(1)
    if wb is None or wb.shape[_in_axis(b)] != channels * per:  # type: ignore[index]
        return None
    return Pair(a, b, per)


def find_pairs(graph: Graph, layers: Sequence[Op]) -> list[Pair]:
    """Equalizable (A, B) pairs among the layers to quantize, in graph order; a layer
    is the A of at most one pair and the B of at most one."""
    quantized = {id(op): op for op in layers}
    return [p for op in layers if (p := _chain(graph, op, quantized)) is not None]


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def scales(ranges: np.ndarray, wmax: np.ndarray) -> np.ndarray:
    """``s_c = sqrt(w_c / r_c)``, normalized so ``max_c s_c r_c = max_c r_c``.  Channels
    whose range or weight is negligible (below `TINY` of the largest: always zero,
    or pruned) keep 1 -- scaling them would only amplify float noise."""
    r = np.asarray(ranges, np.float64)
    w = np.asarray(wmax, np.float64)
    s = np.ones_like(r)
    ok = (r > TINY * r.max(initial=0.0)) & (w > TINY * w.max(initial=0.0))
    if not ok.any():
        return s
    s[ok] = np.sqrt(w[ok] / w[ok].max()) / np.sqrt(r[ok] / r[ok].max())  # ratios in [1e-6, 1]: no overflow
    s[ok] *= r[ok].max() / (s[ok] * r[ok]).max()
    return s


def _replace_const(graph: Graph, op: Op, i: int, value: np.ndarray, suffix: str) -> None:
    old = op.operands[i]
    assert old is not None
    op.set_operand(i, graph.const(value.astype(np.float32), f"{old.name}{suffix}"))


Sweep = Callable[[Graph, Sequence[str], Callable[[str, np.ndarray], None]], None]


def equalize(graph: Graph, layers: Sequence[Op], sweep: Sweep) -> dict[str, Equalized]:
    """Equalize every legal pair among `layers` (float Cube ops about to be quantized),
    measuring channel ranges with one `sweep` of the float graph.  Returns
    ``{A's result name: Equalized}`` for the pairs changed."""
    pairs = find_pairs(graph, layers)
    if not pairs:
        return {}
    inputs = {p.b.operands[0].name: p for p in pairs}  # type: ignore[union-attr]
    ranges: dict[str, np.ndarray] = {}

    def each(name: str, arr: np.ndarray) -> None:
        p = inputs.get(name)
        if p is None:  # a runner may hand back more than was asked for
            return
        x = np.abs(np.asarray(arr, np.float32))
        if _is_conv(p.b):  # channels on axis 1
            c = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).max(axis=1)
        else:  # features on the last axis, `per` of them a channel after a Flatten
            c = x.reshape(-1, x.shape[-1] // p.per, p.per).max(axis=(0, 2))
        ranges[name] = c if name not in ranges else np.maximum(ranges[name], c)

    sweep(graph, list(inputs), each)
    done: dict[str, Equalized] = {}
    for p in pairs:
        name = p.b.operands[0].name  # type: ignore[union-attr]
        if name not in ranges:
            continue
        wa, wb = p.a.operand_const(1), p.b.operand_const(1)
        oa, ib = _out_axis(p.a), _in_axis(p.b)
        assert wa is not None and wb is not None and oa is not None and ib is not None
        channels = wa.shape[oa]
        wb_c = np.moveaxis(np.abs(wb), ib, 0).reshape(channels, -1).max(axis=1)
        s = scales(ranges[name], wb_c)
        if np.allclose(s, 1.0):
            continue
        _replace_const(graph, p.a, 1, wa * _along(s, oa, wa.ndim), "_eq")
        ba = p.a.operand_const(2) if len(p.a.operands) > 2 and p.a.operands[2] is not None else None
        if ba is not None:
            _replace_const(graph, p.a, 2, ba * s.reshape(ba.shape) if ba.ndim == 1 else
                           ba * _along(s, ba.ndim - 1, ba.ndim), "_eq")
        sb = np.repeat(s, p.per)
        _replace_const(graph, p.b, 1, wb / _along(sb, ib, wb.ndim), "_eq")
        done[p.a.results[0].name] = Equalized(1 if _is_conv(p.a) else -1, s.astype(np.float32))
    graph.erase_dead()
    return done
