"""quantize: INT8 post-training quantization of Cube ops (symmetric, zero point 0).

Int8 weights take a quarter of the bytes of f32 ones and the Cube unit's int8
path is its fastest, so every Cube op the pass can quantize (`quantizable`: an
op whose declaration gives it a quantization role — MatMul, Gemm, Conv and their
``fused.*`` forms — with an f32 activation, a constant f32 weight and a
constant per-channel bias or none) whose input activation has a calibrated
range becomes an integer Cube op:

- the activation is quantized per tensor, ``scale = amax / 127``;
- the weight is stored as int8 with one scale per output channel (its own amax);
- the bias as int32 in the accumulator's scale, ``x_scale * w_scale[n]``;
- the epilogue applies the activation and dequantizes (see ``ir/ops/quant.py``).

The integer op keeps the float op's result name, so dumps, `atcpy-compare` and
the accuracy report pair layers by name:

    %h = fused.matmul_add_relu(%x, %w, %b) : (tensor<8x64xf32>, tensor<64x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
      ==>
    %x_q = quant.quantize(%x) {axis = 0, scale = 0.0315} : (tensor<8x64xf32>) -> tensor<8x64xi8>
    %h = quant.matmul(%x_q, %w_q, %w_bias_q, %w_scale) {act = "relu", out = "f32", precision = "int8", x_scale = 0.0315}
        : (tensor<8x64xi8>, tensor<64x32xi8>, tensor<32xi32>, tensor<32xf32>) -> tensor<8x32xf32>

Then quantize/dequantize pairs are folded to a fixed point (`FOLD_RULES`), so
int8 data flows from one integer layer to the next without an f32 round trip:

- requantize fusion: an integer Cube op whose f32 result only feeds quantizes
  of one scale produces int8 itself (``out = "i8", y_scale = s``);
- quantize hoisting: ``quantize(Reshape(v))`` → ``Reshape(quantize(v))`` (any
  op declared as moving elements without changing them: Flatten, Squeeze,
  Transpose, ...) when that lets the quantize meet an integer Cube op;
- ``quantize(dequantize(q, s), s)`` → ``q``; with another scale,
  ``quant.requantize(q) {scale, to_scale}``.

    %h = quant.matmul(%x_q, %w_q, %w_bias_q, %w_scale) {out = "f32", ...} : (...) -> tensor<8x32xf32>
    %r = Reshape(%h, %s) : (tensor<8x32xf32>, tensor<2xi64>) -> tensor<8x32xf32>
    %r_q = quant.quantize(%r) {axis = 0, scale = 0.05} : (tensor<8x32xf32>) -> tensor<8x32xi8>
      ==>
    %h = quant.matmul(%x_q, %w_q, %w_bias_q, %w_scale) {out = "i8", y_scale = 0.05, ...} : (...) -> tensor<8x32xi8>
    %r_q = Reshape(%h, %s) : (tensor<8x32xi8>, tensor<2xi64>) -> tensor<8x32xi8>

Rounding to a grid loses less when the pass can see real inputs, so with
calibration samples it also (each step documented in its module):

1. `passes._equalize` (``equalize``, off by default): before ranges are
   measured, rescales the channels between two Cube layers joined through
   ReLU/MaxPool/Flatten so one per-tensor activation scale fits them all.  It
   helps convolutional models and can hurt dense ones calibrated on few samples
   (bench/int8_accuracy.py measures both), hence opt-in;
2. `passes._gptq` (``gptq``, on): rounds each weight row on the same grid while
   compensating the rounding error on the weights not yet rounded, by the
   inverse of the layer's input second moment ``H = Σ x xᵀ``;
3. `passes._bias_correction` (``bias_correction``, on): folds each layer's mean
   output shift ``E[y_float - y_int8]`` into its int32 bias (renamed
   ``<weight>_bias_c``).

GPTQ and bias correction share one sweep of the float model over the samples.

Calibration comes from outside: passes never import the driver, so the pass
asks a `passes.calibrator.Calibrator` for ranges (on the graph as the pass sees
it, after fusion and equalization) and for sweeps over the samples.  An op
whose activation has no range stays in float, with a diagnostic.

Compile options (``ctx.options``, `passes.options.PassOptions`):

- ``calibrator``: the compile's calibrator (`compiler.calibration.compile_calibrator`
  builds it from ``--calibration_data``);
- ``calibration``: ranges given directly, ``{value name: amax}`` or a
  `Calibrator` (tests, the Python API); it wins over ``calibrator``;
- ``keep_dtype``: op names, result names or ``OpType::Kind`` to leave in float;
- ``precision_mode``: when set, the pass acts only for ``allow_quantize``.

Pass options (``quantize{...}`` in a pipeline): ``equalize``, ``gptq``,
``gptq_centered``, ``gptq_damp``, ``gptq_max_columns``, ``bias_correction`` and
``fold`` switch and tune the steps above.  For hand-written IR without
calibration data, ``default_amax`` gives every activation without a range that
range and ``bias_samples`` draws that many seeded random inputs (uniform in
``±default_amax``) for the sample-based steps:
``quantize{default_amax=4.0, bias_samples=64}``.

Results: counters in ``ctx.stats["quantization"]`` (``quantized_ops``,
``gptq_layers``, ``requantize_fused``, ``quantize_hoisted``, ``qdq_folded``,
``equalized_layers``, ``bias_corrected``) and ``ctx.equalized``, the per-channel
scales equalization left in layer outputs (the accuracy report divides them out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ir.core import Graph, Op, Value
from ir.ops.core import CONV_ATTRS
from ir.ops.quant import INT_CUBE_KINDS
from ir.registry import MOVES_DATA, lookup
from ir.types import DType
from ir.verifier import ANNOTATIONS
from passes._bias_correction import Layer, Sweep, correct_biases, measure
from passes._equalize import equalize
from passes._gptq import Hessian, gptq_rows
from passes._rewrite import apply_rules, rename, replace_op
from passes.base import Pass, PassContext, register
from passes.calibrator import Calibrator, as_calibrator, synthetic
from runtime.kernels.quant import quantize as quantize_array
from runtime.kernels.quant import scale_from_amax

__all__ = ["Quantize", "kept", "parse_keep_dtype", "quantizable"]

INT32 = np.iinfo(np.int32)


def parse_keep_dtype(spec: Any) -> set[str]:
    """``keep_dtype`` as a set: accepts a set/list, a comma/newline separated
    string, or the path of a file listing one name (or ``OpType::X``) per line."""
    if not spec:
        return set()
    if isinstance(spec, str):
        from pathlib import Path

        p = Path(spec)
        text = p.read_text() if "\n" not in spec and p.is_file() else spec
        return {s.strip() for s in text.replace(",", "\n").splitlines() if s.strip() and not s.startswith("#")}
    return {str(s) for s in spec}


def kept(op: Op, keep: set[str]) -> bool:
    if not keep:
        return False
    names = {op.attrs.get("name")} | {r.name for r in op.results}
    d = lookup(op.kind)
    kinds = {op.kind, d.origin if d is not None else op.kind}
    return bool(names & keep) or any(f"OpType::{k}" in keep for k in kinds)


@dataclass
class _Plan:
    """How one Cube op is quantized: the weight as [K, N] (matmul) or [M, ...] (conv)."""

    kind: str  # quant.matmul | quant.conv
    weight: np.ndarray
    bias: np.ndarray | None  # float, one per output channel
    act: str
    attrs: dict[str, Any]


def _moves_data(op: Op) -> bool:
    """The op moves elements without changing them: a quantize commutes with it exactly."""
    d = lookup(op.kind)
    return d is not None and d.has(MOVES_DATA)


def _per_channel(b: np.ndarray | None, n: int) -> np.ndarray | None | bool:
    """A bias as [n] floats; False when it is not a per-output-channel vector."""
    if b is None:
        return None
    if b.size == 1:
        return np.full(n, float(b.reshape(-1)[0]), np.float32)
    if b.size == n and (b.ndim == 1 or all(d == 1 for d in b.shape[:-1])):
        return b.reshape(n).astype(np.float32)
    return False


def _plan(op: Op) -> _Plan | None:
    d = lookup(op.kind)
    role = d.quant if d is not None else None
    if role is None or not op.operands or op.operands[0] is None:
        return None
    if op.kind == "fused.conv" and len(op.operands) > 3:  # a residual epilogue: quant.conv has none; float
        return None
    x = op.operands[0]
    w = op.operand_const(role.weight)
    if x.type.dtype is not DType.f32 or w is None or w.dtype != np.float32:
        return None
    bias_v = op.operands[2] if len(op.operands) > 2 else None
    b = op.operand_const(2) if bias_v is not None else None
    if bias_v is not None and b is None:
        return None  # a computed bias: leave the op in float
    keep = {k: v for k, v in op.attrs.items() if k in ANNOTATIONS or k.startswith("_")}
    if role.to == "quant.conv":
        if w.ndim != x.type.rank or w.ndim < 3:
            return None
        bias = _per_channel(b, w.shape[0])
        if bias is False:
            return None
        conv = {k: op.attrs[k] for k in CONV_ATTRS if op.attrs.get(k) is not None}
        return _Plan(role.to, w, bias, op.attrs.get("act", role.act), {**keep, **conv})  # type: ignore[arg-type]
    if x.type.rank < 2 or w.ndim != 2:
        return None
    if op.kind == "Gemm":
        if op.attrs.get("transA"):
            return None
        w = (w.T if op.attrs.get("transB") else w) * np.float32(op.attrs.get("alpha", 1.0))
        b = None if b is None else b * np.float32(op.attrs.get("beta", 1.0))
    bias = _per_channel(b, w.shape[1])
    if bias is False:
        return None
    return _Plan(role.to, np.ascontiguousarray(w, np.float32), bias, op.attrs.get("act", role.act), keep)  # type: ignore[arg-type]


def _gptq_weight(plan: _Plan, sw: np.ndarray, hess: Hessian, damp: float, centered: bool) -> np.ndarray:
    """The int8 weight by GPTQ rounding on the grid `sw` (see `passes._gptq`)."""
    if plan.kind == "quant.matmul":  # [K, N]: a row per output column
        return gptq_rows(plan.weight.T, sw, hess.matrix(0, centered), damp).T.astype(np.int8)
    w = plan.weight
    m = w.shape[0]
    mg = m // hess.group
    rows = w.reshape(m, -1)
    out = np.concatenate([gptq_rows(rows[g * mg:(g + 1) * mg], sw[g * mg:(g + 1) * mg], hess.matrix(g, centered),
                                    damp) for g in range(hess.group)])
    return out.reshape(w.shape).astype(np.int8)


def _quantize_op(graph: Graph, op: Op, plan: _Plan, amax: float, cache: dict, ctx: PassContext,
                 hess: Hessian | None = None, damp: float = 0.01, centered: bool = False) -> None:
    x = op.operands[0]
    assert x is not None
    sx = scale_from_amax(amax)
    axis = 0 if plan.kind == "quant.conv" else 1
    reduce = tuple(i for i in range(plan.weight.ndim) if i != axis)
    sw = np.asarray(scale_from_amax(np.abs(plan.weight).max(axis=reduce)), np.float32).reshape(-1)
    if hess is not None and hess.rows:
        wq = _gptq_weight(plan, sw, hess, damp, centered)
        ctx.count("quantization", "gptq_layers")
    else:
        wq = quantize_array(plan.weight, sw, axis)
    key = (id(x), sx)
    if key not in cache:
        cache[key] = graph.add_op("quant.quantize", [x], {"scale": sx}, names=[f"{x.name}_q"], before=op).result
    xq = cache[key]
    wname = op.operands[1].name  # type: ignore[union-attr]
    wv = graph.const(wq, f"{wname}_q")
    bv = None
    if plan.bias is not None:
        bq = np.clip(np.rint(plan.bias.astype(np.float64) / (np.float64(sx) * sw)), INT32.min, INT32.max)
        bv = graph.const(bq.astype(np.int32), f"{wname}_bias_q")
    sv = graph.const(sw, f"{wname}_scale")
    attrs = {**plan.attrs, "act": plan.act, "out": "f32", "x_scale": sx, "precision": "int8"}
    new = graph.add_op(plan.kind, [xq, wv, bv, sv], attrs, before=op)
    replace_op(graph, op, [new.result], inherit_names=True)
    ctx.count("quantization", "quantized_ops")


# --- folding rules -------------------------------------------------------------------------
def _int_cube(v: Value | None) -> Op | None:
    p = v.producer if v is not None else None
    return p if p is not None and p.kind in INT_CUBE_KINDS else None


def fuse_requantize(graph: Graph, q: Op, ctx: PassContext) -> bool:
    """quant.matmul{out=f32} -> quantize(s) (every use)  ==>  quant.matmul{out=i8, y_scale=s}."""
    v = q.operands[0]
    p = _int_cube(v)
    if p is None or p.attrs.get("out", "f32") != "f32" or any(o is v for o in graph.outputs):
        return False
    users = v.users  # type: ignore[union-attr]
    s = q.attrs["scale"]
    if any(u.kind != "quant.quantize" or u.attrs["scale"] != s or np.ndim(s) for u in users):
        return False
    new = graph.add_op(p.kind, list(p.operands), {**p.attrs, "out": "i8", "y_scale": float(s)}, before=p)
    return _take_over(graph, users, new.result, p, ctx, "requantize_fused")


def _take_over(graph: Graph, replaced: list[Op], new: Value, dead: Op, ctx: PassContext, counter: str,
               name: str | None = None) -> bool:
    """`new` replaces the results of `replaced`, `dead` goes, and `new` keeps
    `name` (default: `dead`'s result name) so dumps stay readable."""
    name = dead.result.name if name is None else name
    for u in replaced:
        graph.replace_op(u, [new])
    graph.erase(dead)
    rename(graph, new, name)
    ctx.count("quantization", counter)
    return True


def hoist_quantize(graph: Graph, q: Op, ctx: PassContext) -> bool:
    """quantize(Reshape(v)) ==> Reshape(quantize(v)) when the chain above ends at an
    integer Cube op with an f32 result (so the requantize rule can then fire)."""
    mover = q.operands[0].producer  # type: ignore[union-attr]
    if mover is None or not _moves_data(mover) or len(mover.results) != 1:
        return False
    mv = mover.result
    if len(mv.uses) != 1 or any(o is mv for o in graph.outputs):
        return False
    top = mover.operands[0]
    while top is not None and top.producer is not None and _moves_data(top.producer):
        top = top.producer.operands[0]
    p = _int_cube(top)
    if p is None or p.attrs.get("out", "f32") != "f32":
        return False
    src = mover.operands[0]
    assert src is not None
    nq = graph.add_op("quant.quantize", [src], dict(q.attrs), names=[f"{src.name}_q"], before=mover)
    # result type given, not inferred: a Reshape to [-1, k] of a symbolic shape cannot be re-inferred
    nm = graph.add_op(mover.kind, [nq.result, *mover.operands[1:]], dict(mover.attrs), before=mover,
                      result_types=[mv.type.with_dtype(DType.i8)])
    return _take_over(graph, [q], nm.result, mover, ctx, "quantize_hoisted", name=q.result.name)


def fold_dequantize(graph: Graph, q: Op, ctx: PassContext) -> bool:
    """quantize(dequantize(q, s1), s2) ==> q (s1 == s2) or requantize(q) {s1 -> s2}."""
    d = q.operands[0].producer  # type: ignore[union-attr]
    if d is None or d.kind != "quant.dequantize" or d.operands[0].type.dtype is not DType.i8:  # type: ignore[union-attr]
        return False
    s1, s2 = d.attrs["scale"], q.attrs["scale"]
    if np.ndim(s1) or np.ndim(s2):
        return False
    src = d.operands[0]
    assert src is not None
    if float(s1) == float(s2):
        graph.replace_op(q, [src])
    else:
        r = graph.add_op("quant.requantize", [src], {"scale": float(s1), "to_scale": float(s2)}, before=q)
        replace_op(graph, q, [r.result], inherit_names=True)
    ctx.count("quantization", "qdq_folded")
    return True


FOLD_RULES = {"quant.quantize": [fold_dequantize, fuse_requantize, hoist_quantize]}


# --- the pass ---------------------------------------------------------------------------------
def quantizable(op: Op, keep: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether the pass turns `op` into an integer Cube op once its input activation
    (``op.operands[0]``) has a range: a Cube op with an f32 activation, a constant
    f32 weight and a constant per-channel bias or none, not kept in float by
    `keep` (see `parse_keep_dtype`).  Calibration measures exactly these inputs."""
    return _plan(op) is not None and not kept(op, keep)


def _calibrator(ctx: PassContext) -> Calibrator | None:
    """Ranges given directly (``options.calibration``: IR tests, the Python API),
    else the driver's calibrator (``options.calibrator``), else none."""
    if ctx.options.calibration is not None:
        return as_calibrator(ctx.options.calibration)
    return ctx.options.calibrator


def _ranges(graph: Graph, cal: Calibrator | None) -> dict[str, float]:
    """{value name: amax} for `graph` as the pass sees it (after equalization)."""
    if cal is None:
        return {}
    return {str(k): float(v) for k, v in cal.ranges(graph).items()}


def _layer(op: Op, plan: _Plan, amax: float, gptq_max_columns: int) -> Layer:
    x = op.operands[0]
    assert x is not None
    conv = plan.kind == "quant.conv"
    layer = Layer(op.results[0].name, conv, plan.attrs, x.name, amax, plan.weight, plan.bias)
    group = int(plan.attrs.get("group", 1) or 1) if conv else 1
    columns = int(np.prod(plan.weight.shape[1:])) if conv else plan.weight.shape[0]
    if 0 < columns <= gptq_max_columns:
        layer.observer = Hessian(conv, plan.attrs, tuple(plan.weight.shape[2:]), group)
    return layer


@register
@dataclass
class Quantize(Pass):
    name: ClassVar[str] = "quantize"
    default_amax: float = 0.0  # range for activations calibration did not see (0: leave them float)
    fold: bool = True  # fold quantize/dequantize pairs and fuse requantization
    bias_correction: bool = True  # fold each layer's mean quantization error into its bias
    bias_samples: int = 0  # without calibration samples: this many synthetic ones (IR tests)
    equalize: bool = False  # rescale channels between layers for per-tensor activations, see passes._equalize
    gptq: bool = True  # round weights by GPTQ on the calibration inputs (same grid), see passes._gptq
    gptq_centered: bool = True  # with bias correction on, GPTQ minimizes the error around the mean (see _gptq)
    gptq_damp: float = 0.01  # GPTQ's damping: this fraction of the mean diagonal added to H
    gptq_max_columns: int = 2048  # larger layers (K = Cin*kh*kw or K) keep plain rounding: H is K x K

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        mode = ctx.options.precision_mode
        if mode is not None and mode != "allow_quantize":
            return False
        keep = parse_keep_dtype(ctx.options.keep_dtype)
        todo = [(op, p) for op in graph.ops if (p := _plan(op)) is not None and not kept(op, keep)]
        if not todo:
            return False
        cal = _calibrator(ctx)
        samples = self._samples(graph, cal)
        if samples is not None:
            done = equalize(graph, [op for op, _ in todo], samples)
            if done:
                ctx.equalized.update(done)
                ctx.count("quantization", "equalized_layers", len(done))
                todo = [(op, p) for op, _ in todo if (p := _plan(op)) is not None]
        amax = _ranges(graph, cal)
        todo_amax = []
        for op, plan in todo:
            x = op.operands[0]
            a = amax.get(x.name, self.default_amax or None)  # type: ignore[union-attr]
            if a is None:
                ctx.diagnostics.append(f"quantize: {op.kind} %{op.results[0].name} kept in float: "
                                       f"no calibration range for %{x.name}")  # type: ignore[union-attr]
                continue
            todo_amax.append((op, plan, a))
        if not todo_amax:
            return False
        sweep = self._sweep(graph, cal)
        layers = [_layer(op, plan, a, self.gptq_max_columns if self.gptq else 0) for op, plan, a in todo_amax]
        if sweep is not None:
            measure(graph, layers, sweep)
        cache: dict = {}
        for (op, plan, a), layer in zip(todo_amax, layers):
            _quantize_op(graph, op, plan, a, cache, ctx, layer.observer, self.gptq_damp,
                         centered=self.bias_correction and self.gptq_centered)
        graph.erase_dead()
        if self.fold:
            apply_rules(graph, FOLD_RULES, ctx)
        if sweep is not None and self.bias_correction:
            ctx.count("quantization", "bias_corrected", correct_biases(graph, layers))
            graph.erase_dead()
        return True

    def _samples(self, graph: Graph, cal: Calibrator | None) -> Sweep | None:
        """How to run the float graph on calibration samples *before* ranges are
        measured, for equalization (which changes them); None when it is off or
        the ranges are fixed already (they would be those of the graph before)."""
        if not self.equalize or (cal is not None and not cal.measures_graph):
            return None
        if cal is not None and cal.samples:
            return cal.sweep
        return self._synthetic(graph)

    def _sweep(self, graph: Graph, cal: Calibrator | None) -> Sweep | None:
        """How to run graphs on calibration samples, when bias correction or GPTQ is on and there are some."""
        if not (self.bias_correction or self.gptq):
            return None
        if cal is not None and cal.samples:
            return cal.sweep
        return self._synthetic(graph)

    def _synthetic(self, graph: Graph) -> Sweep | None:
        """Seeded random samples for hand-written IR: ``quantize{default_amax=4.0, bias_samples=64}``."""
        if self.bias_samples > 0 and self.default_amax > 0:
            return synthetic(graph, self.bias_samples, self.default_amax).sweep
        return None
