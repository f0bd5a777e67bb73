"""fuse: merge a Cube op with its bias and activation epilogue into one ``fused.*`` op.

Patterns (rooted at the chain's last op, so a MatMul+Add+Relu is matched
whole rather than as MatMul+Add then Relu):

    Relu(Add(MatMul(x, w), b))     → fused.matmul_add_relu(x, w, b)
    Add(MatMul(x, w), b)           → fused.matmul_add(x, w, b)
    Relu(MatMul(x, w))             → fused.matmul_relu(x, w)
    [Relu](Gemm(x, w, c)) plain    → fused.matmul_add[_relu](x, w, c)   (Gemm canonicalize could not normalize)
    Add(Conv(x, w, b?), c)         → Conv(x, w, b + c)                  (c per-channel constant;
                                                                         canonicalize's rule, `passes._conv_fold`)
    Add|Sum(Conv(x, w, b?), r)     → fused.conv(x, w, b?, r)             (r of the result's type: a residual
                                                                         shortcut, added before the epilogue)
    Act(Conv(x, w, b?))            → fused.conv(x, w, b?) {act = "<epilogue>"}
                                     (any op declared with ``epilogue=...``: Relu, HardSwish)
    Clip(Conv(..), 0, 6)           → fused.conv(..) {act = "relu6"}      (Clip(.., 0) → "relu"; the
                                                                         bounds are operands, so a rule)
    Mul(c, Sigmoid(c)), c = Conv(..) → fused.conv(..) {act = "silu"}     (SiLU as exporters write it;
                                                                         c has exactly those two uses)
    Mul(x, gate(conv2(act(conv1(GlobalAveragePool(x))))))            (squeeze-excitation; 1x1 convs,
                                   → fused.se(x, w1, b1, w2, b2)         gate Sigmoid or HardSigmoid)

``b`` must be a constant broadcast along the last axis only (shape [N] or
[1, N]).  A fusion is legal only when every intermediate result has exactly
one use and is not a graph output, and when the fused op would not create a
cycle (an extra operand reachable from the chain's head: a walk down from the
head that stops at ops placed after the extra operand's producer, since a
path between two ops only passes through ops placed between them).

Before / after (``fuse``)::

    %0 = MatMul(%x, %w) : (tensor<8x64xf32>, tensor<64x32xf32>) -> tensor<8x32xf32>
    %1 = Add(%0, %b) : (tensor<8x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
    %2 = Relu(%1) : (tensor<8x32xf32>) -> tensor<8x32xf32>
  ==>
    %2 = fused.matmul_add_relu(%x, %w, %b) : (tensor<8x64xf32>, tensor<64x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ir.core import Graph, Op, Value
from ir.registry import all_ops, lookup
from passes._conv_fold import const_of as _const
from passes._conv_fold import conv_and_channel_const, fold_into_conv
from passes._rewrite import Rewriter, RuleTable, rewrite
from passes.base import Pass, PassContext, register

__all__ = ["RULES", "Fuse"]


def _annotations(op: Op) -> dict:
    return {k: v for k, v in op.attrs.items() if k == "name"}


def creates_cycle(graph: Graph, head: Op, extras: Sequence[Value | None]) -> bool:
    """Would an op replacing the chain starting at `head` and also reading
    `extras` create a cycle?  Yes when an extra operand is computed from
    `head`'s result along another path."""
    producers = [v.producer for v in extras if v is not None and v.producer is not None
                 and v.producer.kind != "const"]
    return any(_reaches(graph, head, p) for p in producers)  # constants and inputs depend on nothing


def _reaches(graph: Graph, src: Op, dst: Op) -> bool:
    """Is there a path of values from `src` to `dst`?  Ops are in a valid order,
    so only ops placed between the two can be on it."""
    ops = graph.ops
    if src is dst:
        return True
    if not ops.comes_before(src, dst):
        return False
    limit = ops.key(dst)
    seen, stack = {src}, [src]
    while stack:
        for r in stack.pop().results:
            for u in r.uses:
                if u.op is dst:
                    return True
                if u.op not in seen and ops.key(u.op) < limit:
                    seen.add(u.op)
                    stack.append(u.op)
    return False


def _bias_ok(mm: Value, b: Value) -> bool:
    """A constant broadcast along the last axis of the MatMul result."""
    c = _const(b)
    n = mm.type.shape[-1] if mm.type.rank else None
    if c is None or not isinstance(n, int) or b.type.dtype != mm.type.dtype:
        return False
    if c.shape == (n,):
        return True
    return c.shape == (1, n) and mm.type.rank >= 2


def _matmul_bias(rw: Rewriter, add: Op) -> tuple[Op, Value] | None:
    """(MatMul, bias) when `add` is Add(MatMul(..), bias) fusable as one op."""
    if add.kind != "Add":
        return None
    for i in (0, 1):
        mm_v, b = add.operands[i], add.operands[1 - i]
        mm = mm_v.producer if mm_v is not None else None
        if (mm is not None and mm.kind == "MatMul" and rw.single_use(mm_v) and _bias_ok(mm_v, b)
                and add.result.type == mm_v.type and not creates_cycle(rw.graph, mm, [b])):
            return mm, b
    return None


def _plain_gemm(gemm: Op) -> bool:
    """A Gemm that is exactly x @ w (+ c)."""
    a = gemm.attrs
    return (not a.get("transA", 0) and not a.get("transB", 0) and float(a.get("alpha", 1.0)) == 1.0
            and float(a.get("beta", 1.0)) == 1.0)


def _fuse(rw: Rewriter, last: Op, kind: str, operands: list, attrs: dict, ctx: PassContext, key: str) -> bool:
    if not rw.replace_with(last, kind, operands, attrs):  # broadcasting changed the shape: not the same computation
        return False
    ctx.count("fusion", key)
    return True


def _relu_consumes(rw: Rewriter, v: Value) -> bool:
    return rw.single_use(v) and v.uses[0].op.kind == "Relu"


# -- rules ---------------------------------------------------------------------------------
def fuse_relu(rw: Rewriter, relu: Op, ctx: PassContext) -> bool:
    x = relu.operands[0]
    p = x.producer
    if p is None or not rw.single_use(x):
        return False
    if p.kind == "Add":
        found = _matmul_bias(rw, p)
        if found:
            mm, b = found
            return _fuse(rw, relu, "fused.matmul_add_relu", [*mm.operands, b], _annotations(mm), ctx,
                         "matmul_add_relu")
        return False
    if p.kind == "MatMul":
        return _fuse(rw, relu, "fused.matmul_relu", list(p.operands), _annotations(p), ctx, "matmul_relu")
    if p.kind == "fused.matmul_add":
        return _fuse(rw, relu, "fused.matmul_add_relu", list(p.operands), _annotations(p), ctx,
                     "matmul_add_relu")
    if p.kind == "Gemm" and _plain_gemm(p):
        c = p.operands[2] if len(p.operands) > 2 else None
        if c is None:
            return _fuse(rw, relu, "fused.matmul_relu", p.operands[:2], _annotations(p), ctx, "matmul_relu")
        if _bias_ok(x, c):
            return _fuse(rw, relu, "fused.matmul_add_relu", list(p.operands), _annotations(p), ctx,
                         "matmul_add_relu")
        return False
    return False


def _epilogue_host(kind: str) -> str | None:
    """The op that runs `kind` with an ``act`` epilogue: `kind` itself when it
    declares ``act``, else the fused op declared as coming from it with ``act``
    (Conv -> fused.conv)."""
    d = lookup(kind)
    if d is None:
        return None
    if "act" in d.attrs:
        return kind
    return next((k for k, f in all_ops().items() if f.origin == kind and k != kind and "act" in f.attrs), None)


def fuse_epilogue(rw: Rewriter, act: Op, ctx: PassContext) -> bool:
    """Act(Cube op) → the Cube op with ``act`` set, for any op declared with an
    ``epilogue`` name, when the Cube op has no epilogue yet."""
    name = lookup(act.kind).epilogue  # type: ignore[union-attr]
    x = act.operands[0]
    p = x.producer if x is not None else None
    if (p is None or len(act.operands) != 1 or not rw.single_use(x) or not x.type.dtype.is_float
            or p.attrs.get("act", "none") != "none"):
        return False
    host = _epilogue_host(p.kind)
    if host is None:
        return False
    origin = lookup(host).origin.lower()  # type: ignore[union-attr]
    return _fuse(rw, act, host, list(p.operands), {**p.attrs, "act": name}, ctx, f"{origin}_{name}")


def _host_of(rw: Rewriter, x: Value | None) -> tuple[Op, str] | None:
    """(Cube op producing float `x` with no epilogue yet, the op kind that runs it with one)."""
    p = x.producer if x is not None else None
    if p is None or not x.type.dtype.is_float or p.attrs.get("act", "none") != "none":
        return None
    host = _epilogue_host(p.kind)
    return (p, host) if host is not None else None


def _fuse_act(rw: Rewriter, last: Op, p: Op, host: str, name: str, ctx: PassContext) -> bool:
    origin = lookup(host).origin.lower()  # type: ignore[union-attr]
    return _fuse(rw, last, host, list(p.operands), {**p.attrs, "act": name}, ctx, f"{origin}_{name}")


def _scalar(v: Value | None) -> float | None:
    c = _const(v)
    return float(c.reshape(-1)[0]) if c is not None and c.size == 1 else None


def fuse_clip(rw: Rewriter, clip: Op, ctx: PassContext) -> bool:
    """Clip(Cube op, 0, 6) → act = "relu6" (MobileNet's ReLU6); Clip(Cube op, 0) → "relu"."""
    x = clip.operands[0]
    hit = _host_of(rw, x)
    if hit is None or not rw.single_use(x):
        return False
    lo = _scalar(clip.operands[1]) if len(clip.operands) > 1 and clip.operands[1] is not None else clip.attrs.get("min")
    hi = _scalar(clip.operands[2]) if len(clip.operands) > 2 and clip.operands[2] is not None else clip.attrs.get("max")
    if lo == 0.0 and hi == 6.0:
        return _fuse_act(rw, clip, *hit, "relu6", ctx)
    if lo == 0.0 and hi is None:
        return _fuse_act(rw, clip, *hit, "relu", ctx)
    return False


def fuse_silu(rw: Rewriter, mul: Op, ctx: PassContext) -> bool:
    """Mul(x, Sigmoid(x)) with x a Cube op's result → act = "silu" (SiLU / Swish as exporters
    write it: x has exactly those two uses)."""
    for i in (0, 1):
        x, s = mul.operands[i], mul.operands[1 - i]
        sig = s.producer if s is not None else None
        if sig is None or sig.kind != "Sigmoid" or sig.operands[0] is not x or not rw.single_use(s):
            continue
        hit = _host_of(rw, x)
        users = {u.op for u in x.uses} if x is not None else set()
        if hit is None or users != {sig, mul} or len(x.uses) != 2 or x in rw.graph.outputs:
            continue
        if mul.result.type != x.type:
            continue
        return _fuse_act(rw, mul, *hit, "silu", ctx)
    return False


def _pointwise(op: Op | None) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped conv with constant weights and bias."""
    if op is None or op.kind not in ("Conv", "fused.conv") or len(op.operands) != 3:
        return False
    a, w = op.attrs, _const(op.operands[1])
    return (w is not None and w.ndim >= 3 and all(d == 1 for d in w.shape[2:]) and _const(op.operands[2]) is not None
            and int(a.get("group", 1) or 1) == 1 and not any(a.get("pads") or []) and a.get("auto_pad", "NOTSET")
            in ("NOTSET", "VALID", b"NOTSET") and all(v == 1 for v in (a.get("strides") or [1]))
            and all(v == 1 for v in (a.get("dilations") or [1])))


def _pooled(v: Value | None, x: Value) -> bool:
    """`v` is the spatial mean of `x` with the channel axis kept: GlobalAveragePool(x), or
    ReduceMean(x) over every axis after the channels with keepdims."""
    p = v.producer if v is not None else None
    if p is None or p.operands[0] is not x:
        return False
    if p.kind == "GlobalAveragePool":
        return True
    axes = p.attrs.get("axes")
    if axes is None and len(p.operands) > 1:
        c = _const(p.operands[1])
        axes = None if c is None else c.tolist()
    return (p.kind == "ReduceMean" and int(p.attrs.get("keepdims", 1)) == 1 and axes is not None
            and sorted(a % x.type.rank for a in axes) == list(range(2, x.type.rank)))


def _feeds_only(rw: Rewriter, v: Value, op: Op) -> bool:
    """`v`'s one live use is `op` (uses by ops this round made dead -- an epilogue's old Conv,
    erased at the round's end -- do not count) and it is not a graph output."""
    if v in rw.graph.outputs:
        return False
    return all(u.op is op or not any(r.uses or r in rw.graph.outputs for r in u.op.results) for u in v.uses)


def _se_gate(rw: Rewriter, gv: Value) -> tuple[Op, dict] | None:
    """(the excitation conv, gate attributes) when `gv` is sigmoid or hardsigmoid of one."""
    g = gv.producer
    if g is not None and g.kind == "fused.conv" and g.attrs.get("act") == "sigmoid":
        return g, {"gate": "sigmoid"}
    if g is not None and g.kind == "HardSigmoid" and _feeds_only(rw, g.operands[0], g):
        c2 = g.operands[0].producer
        if c2 is not None and c2.attrs.get("act", "none") == "none":
            return c2, {"gate": "hardsigmoid", "gate_alpha": float(g.attrs.get("alpha", 0.2)),
                        "gate_beta": float(g.attrs.get("beta", 0.5))}
    return None


def fuse_se(rw: Rewriter, mul: Op, ctx: PassContext) -> bool:
    """Mul(x, gate(conv2(act(conv1(pool(x)))))) → fused.se(x, w1, b1, w2, b2): the
    squeeze-excitation block of MobileNetV3 / EfficientNet as one op."""
    for i in (0, 1):
        x, gv = mul.operands[i], mul.operands[1 - i]
        if x is None or gv is None or not rw.single_use(gv) or mul.result.type != x.type:
            continue
        found = _se_gate(rw, gv)
        if found is None or not _pointwise(found[0]) or not _feeds_only(rw, found[0].operands[0], found[0]):
            continue
        c2, gate = found
        c1 = c2.operands[0].producer
        if not _pointwise(c1) or not _feeds_only(rw, c1.operands[0], c1) or not _pooled(c1.operands[0], x):
            continue
        act = c1.attrs.get("act", "none") if c1.kind == "fused.conv" else "none"
        operands = [x, c1.operands[1], c1.operands[2], c2.operands[1], c2.operands[2]]
        return _fuse(rw, mul, "fused.se", operands, {"act": act, **gate}, ctx, f"se_{act}_{gate['gate']}")
    return False


def fuse_matmul_add(rw: Rewriter, add: Op, ctx: PassContext) -> bool:
    if _relu_consumes(rw, add.result) and _matmul_bias(rw, add):
        return False  # the Relu rule fuses all three
    found = _matmul_bias(rw, add)
    if not found:
        return False
    mm, b = found
    return _fuse(rw, add, "fused.matmul_add", [*mm.operands, b], _annotations(mm), ctx, "matmul_add")


def fuse_conv_add(rw: Rewriter, add: Op, ctx: PassContext) -> bool:
    """Add(Conv(x, w, b), c) with c a per-channel constant → Conv(x, w, b + c)."""
    hit = conv_and_channel_const(rw, add, kinds=("Conv", "fused.conv"))
    if hit is None:
        return False
    conv, c = hit[0], hit[1]
    fold_into_conv(rw, add, conv, None, c, weight_name="", bias_name=f"{conv.result.name}_bias")
    ctx.count("fusion", "conv_add")
    return True


def fuse_conv_residual(rw: Rewriter, add: Op, ctx: PassContext) -> bool:
    """Add(Conv(..), r) or Sum(Conv(..), r), r of the result's type (a ResNet shortcut) →
    fused.conv(x, w, b, r): the residual is added to each output tile before the epilogue,
    so a following Relu fuses too.  Not in an INT8 compile (``allow_quantize``): quant.conv has no
    residual, and quantize would leave such convs in float (as it does when a pipeline runs
    fuse then quantize with no precision mode set)."""
    if len(add.operands) != 2 or None in add.operands or ctx.options.precision_mode == "allow_quantize":
        return False
    for i in (0, 1):
        v, r = add.operands[i], add.operands[1 - i]
        p = v.producer
        if (p is None or p.kind not in ("Conv", "fused.conv") or len(p.operands) > 3
                or p.attrs.get("act", "none") != "none" or not rw.single_use(v) or r.type != v.type
                or add.result.type != v.type or not v.type.dtype.is_float or creates_cycle(rw.graph, p, [r])):
            continue
        bias = p.operands[2] if len(p.operands) > 2 else None
        attrs = {**p.attrs, "act": "none"}
        return _fuse(rw, add, "fused.conv", [p.operands[0], p.operands[1], bias, r], attrs, ctx, "conv_residual")
    return False


def fuse_gemm(rw: Rewriter, gemm: Op, ctx: PassContext) -> bool:
    """A plain Gemm canonicalize left alone (e.g. a non-constant weight)."""
    c = gemm.operands[2] if len(gemm.operands) > 2 else None
    if not _plain_gemm(gemm) or c is None or not _bias_ok(gemm.result, c):
        return False
    if _relu_consumes(rw, gemm.result):
        return False  # the Relu rule fuses both
    return _fuse(rw, gemm, "fused.matmul_add", list(gemm.operands), _annotations(gemm), ctx, "matmul_add")


def _rules() -> RuleTable:
    rules: RuleTable = {"Relu": [fuse_relu], "Add": [fuse_matmul_add, fuse_conv_add, fuse_conv_residual],
                        "Sum": [fuse_conv_residual], "Gemm": [fuse_gemm],
                        "Clip": [fuse_clip], "Mul": [fuse_silu, fuse_se]}
    for kind, d in all_ops().items():
        if d.epilogue:
            rules.setdefault(kind, []).append(fuse_epilogue)
    return rules


RULES = _rules()


@register
@dataclass
class Fuse(Pass):
    """Cube op + bias + activation-epilogue fusion (see module doc)."""

    name: ClassVar[str] = "fuse"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        return rewrite(graph, RULES, ctx)
