"""Core ops: ONNX operators with ONNX's names, operand order and attribute
names (defaults filled in), plus ``const``.

The frontend normalizes a few things at import so that the IR has one form:
``auto_pad`` becomes explicit ``pads``; optional operands ONNX leaves out are
``none``.  Ops whose result shape depends on operand *values* infer it when
those operands are constants and otherwise keep the types they were built with
(trait ``shape_from_data``).
"""

from __future__ import annotations

import numpy as np

from ir.core import Op
from ir.gemm import conv_gemm, conv_transpose_gemm, gemm_op_gemm, matmul_gemm
from ir.geometry import transposed_out
from ir.ops._infer import (
    broadcast,
    const_operand,
    conv_out_dim,
    flag,
    norm_axis,
    operand_type,
    same_as,
    same_with_axis,
    trusted,
)
from ir.ops.shape import shape_operand
from ir.registry import (
    CUBE_ONLY,
    CUBE_OR_VECTOR,
    FP16_SAFE,
    HOMOGENEOUS,
    INDEXED_READ,
    MOVES_DATA,
    VECTOR_ONLY,
    VIEW,
    Attr,
    QuantRole,
    TypeInferenceError,
    define,
)
from ir.symbolic import dim_add, dim_div, dim_mul, dim_prod, dim_sub
from ir.types import Dim, DType, TensorType

I, F, IS, T = (Attr(k) for k in ("int", "float", "ints", "tensor"))


def _i(d: int) -> Attr:
    return Attr("int", d)


def _f(d: float) -> Attr:
    return Attr("float", d)


def _s(d: str) -> Attr:
    return Attr("str", d)


# --- constants ------------------------------------------------------------------
def _const(op: Op) -> list[TensorType]:
    a = op.attrs.get("value")
    if not isinstance(a, np.ndarray):
        raise TypeInferenceError("const needs a `value` array")
    return [TensorType(DType.from_numpy(a.dtype), a.shape)]


define("const", operands=0, infer=_const, attrs={"value": Attr("tensor", required=True)},
       doc='%w = const() {value = dense_resource<"w"> : tensor<64x10xf32>} : () -> tensor<64x10xf32>')

# --- matrix ops (Cube) -------------------------------------------------------------
def matmul_shape(a: tuple, b: tuple, op: Op) -> tuple:
    if len(a) == 0 or len(b) == 0:
        raise TypeInferenceError("MatMul operands must not be scalars")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    ka, kb = a2[-1], b2[-2]
    if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
        raise TypeInferenceError(f"{op.kind}: inner dimensions differ: {tuple(a)} x {tuple(b)}")
    batch = broadcast([a2[:-2], b2[:-2]])
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _matmul(op: Op) -> list[TensorType]:
    a, b = operand_type(op, 0), operand_type(op, 1)
    return [TensorType(a.dtype, matmul_shape(a.shape, b.shape, op))]


define("MatMul", operands=2, infer=_matmul, engines=CUBE_OR_VECTOR, gemm=matmul_gemm, label="matmul",
       quant=QuantRole("quant.matmul"),
       doc="%y = MatMul(%x, %w) : (tensor<8x64xf32>, tensor<64x32xf32>) -> tensor<8x32xf32>")
define("MatMulInteger", operands=(2, 4), engines=CUBE_ONLY, gemm=matmul_gemm, label="matmul",
       infer=lambda op: [TensorType(DType.i32, matmul_shape(operand_type(op, 0).shape, operand_type(op, 1).shape, op))])


def _gemm(op: Op) -> list[TensorType]:
    """Any nonzero trans flag transposes (as ONNX's reference and `canonicalize` read it)."""
    a, b = operand_type(op, 0), operand_type(op, 1)
    if a.rank != 2 or b.rank != 2:
        raise TypeInferenceError(f"Gemm: A and B must be matrices, got ranks {a.rank} and {b.rank}")
    ta, tb = bool(op.attrs.get("transA")), bool(op.attrs.get("transB"))
    (m, ka), (kb, n) = a.shape[::-1] if ta else a.shape, b.shape[::-1] if tb else b.shape
    if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
        raise TypeInferenceError(f"Gemm: inner dimensions differ: A {list(a.shape)} (transA={op.attrs.get('transA')}) "
                                 f"x B {list(b.shape)} (transB={op.attrs.get('transB')})")
    return [TensorType(a.dtype, (m, n))]


define("Gemm", operands=(2, 3), infer=_gemm, engines=CUBE_OR_VECTOR, gemm=gemm_op_gemm, label="gemm",
       quant=QuantRole("quant.matmul"),
       attrs={"alpha": _f(1.0), "beta": _f(1.0), "transA": _i(0), "transB": _i(0)})


def _conv(op: Op) -> list[TensorType]:
    x, w = operand_type(op, 0), operand_type(op, 1)
    nsp = x.rank - 2
    k = op.attrs.get("kernel_shape") or list(w.shape[2:])
    if any(isinstance(d, int) and d != int(kd) for d, kd in zip(w.shape[2:], k)) or len(k) != w.rank - 2:
        raise TypeInferenceError(f"{op.kind}: kernel_shape {list(k)} is not the weight's window {list(w.shape[2:])}")
    strides = op.attrs.get("strides") or [1] * nsp
    dil = op.attrs.get("dilations") or [1] * nsp
    pads = op.attrs.get("pads") or [0] * (2 * nsp)
    group, (c_in, c_w) = int(op.attrs.get("group") or 1), (x.shape[1], w.shape[1])
    if isinstance(c_in, int) and isinstance(c_w, int) and (w.rank != x.rank or c_in != c_w * group):
        raise TypeInferenceError(f"{op.kind}: a weight {w} (group {group}) for an input {x}")
    bias = op.operands[2] if op.kind in ("Conv", "fused.conv") and len(op.operands) > 2 else None
    b = bias.type if bias is not None else None
    if b is not None and (b.rank != 1 or all(isinstance(d, int) for d in (b.shape[0], w.shape[0]))
                          and b.shape[0] != w.shape[0]):
        raise TypeInferenceError(f"{op.kind}: a bias {b} for {w.shape[0]} output channels")
    sp = [conv_out_dim(x.shape[2 + i], k[i], strides[i], dil[i], pads[i], pads[i + nsp]) for i in range(nsp)]
    return [TensorType(x.dtype, (x.shape[0], w.shape[0], *sp))]


CONV_ATTRS = {"dilations": IS, "group": _i(1), "kernel_shape": IS, "pads": IS, "strides": IS}
define("Conv", operands=(2, 3), infer=_conv, attrs=CONV_ATTRS, engines=CUBE_ONLY, gemm=conv_gemm, label="conv",
       quant=QuantRole("quant.conv"))


def _conv_transpose(op: Op) -> list[TensorType]:
    x, w = operand_type(op, 0), operand_type(op, 1)
    nsp = x.rank - 2
    if op.attrs.get("output_shape"):
        return [TensorType(x.dtype, (x.shape[0], w.shape[1] * op.attrs.get("group", 1), *op.attrs["output_shape"]))]
    k = op.attrs.get("kernel_shape") or list(w.shape[2:])
    s = op.attrs.get("strides") or [1] * nsp
    d = op.attrs.get("dilations") or [1] * nsp
    p = op.attrs.get("pads") or [0] * (2 * nsp)
    op_ = op.attrs.get("output_padding") or [0] * nsp
    sp = []
    for i in range(nsp):
        n = x.shape[2 + i]
        sp.append(transposed_out(n, k[i], s[i], d[i], p[i], p[i + nsp], op_[i]) if isinstance(n, int) else "?")
    return [TensorType(x.dtype, (x.shape[0], w.shape[1] * op.attrs.get("group", 1), *sp))]


define("ConvTranspose", operands=(2, 3), infer=_conv_transpose, engines=CUBE_ONLY, gemm=conv_transpose_gemm,
       attrs={**CONV_ATTRS, "output_padding": IS, "output_shape": IS})


# --- normalization -------------------------------------------------------------------
# training mode (AICPU) also gives running_mean and running_var, typed as the mean operand
define("BatchNormalization", engines=VECTOR_ONLY, operands=5,
       infer=lambda op: [operand_type(op, 0)] + [operand_type(op, 3)] * (len(op.results) - 1),
       attrs={"epsilon": _f(1e-5), "momentum": _f(0.9), "training_mode": _i(0)})
define("InstanceNormalization", engines=VECTOR_ONLY, operands=3, infer=same_as(0), attrs={"epsilon": _f(1e-5)})
define("LayerNormalization", engines=VECTOR_ONLY, operands=(2, 3), attrs={"axis": _i(-1), "epsilon": _f(1e-5), "stash_type": _i(1)},
       infer=lambda op: [operand_type(op, 0)] + [
           operand_type(op, 0).with_shape(
               operand_type(op, 0).shape[: norm_axis(op.attrs["axis"], operand_type(op, 0).rank)]
               + (1,) * (operand_type(op, 0).rank - norm_axis(op.attrs["axis"], operand_type(op, 0).rank))
           ).with_dtype(DType.f32)
       ] * (len(op.results) - 1))
define("LRN", engines=VECTOR_ONLY, operands=1, infer=same_as(0),
       attrs={"alpha": _f(1e-4), "beta": _f(0.75), "bias": _f(1.0), "size": Attr("int", required=True)})
for _name in ("Softmax", "LogSoftmax", "Hardmax"):
    define(_name, operands=1, infer=same_with_axis(0), attrs={"axis": _i(-1)}, engines=VECTOR_ONLY)


# --- pooling ---------------------------------------------------------------------------
def _pool(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    nsp = x.rank - 2
    k = op.attrs["kernel_shape"]
    s = op.attrs.get("strides") or [1] * nsp
    d = op.attrs.get("dilations") or [1] * nsp
    p = op.attrs.get("pads") or [0] * (2 * nsp)
    ceil = bool(op.attrs.get("ceil_mode", 0))
    sp = [conv_out_dim(x.shape[2 + i], k[i], s[i], d[i], p[i], p[i + nsp], ceil) for i in range(nsp)]
    t = TensorType(x.dtype, (*x.shape[:2], *sp))
    return [t] + [t.with_dtype(DType.i64)] * (len(op.results) - 1)


POOL_ATTRS = {"kernel_shape": Attr("ints", required=True), "pads": IS, "strides": IS, "ceil_mode": _i(0)}
define("MaxPool", operands=1, infer=_pool, engines=VECTOR_ONLY, traits={FP16_SAFE, HOMOGENEOUS},
       attrs={**POOL_ATTRS, "dilations": IS, "storage_order": _i(0)})
define("AveragePool", operands=1, infer=_pool, engines=VECTOR_ONLY, traits={FP16_SAFE, HOMOGENEOUS},
       attrs={**POOL_ATTRS, "dilations": IS, "count_include_pad": _i(0)})
define("LpPool", engines=VECTOR_ONLY, operands=1, infer=_pool, attrs={**POOL_ATTRS, "dilations": IS, "p": _i(2)})
for _name in ("GlobalAveragePool", "GlobalMaxPool"):
    define(_name, operands=1, engines=VECTOR_ONLY, traits={FP16_SAFE, HOMOGENEOUS},
           infer=lambda op: [operand_type(op, 0).with_shape(operand_type(op, 0).shape[:2] + (1,) * (operand_type(op, 0).rank - 2))])


# --- reductions ------------------------------------------------------------------------
def _reduce(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    axes = op.attrs.get("axes")
    if axes is None and len(op.operands) > 1 and op.operands[1] is not None:
        c = const_operand(op, 1)
        if c is None:
            return _reduce_dynamic_axes(op, x)
        axes = [int(a) for a in c.reshape(-1)]
    if not axes:
        if op.attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.rank))
    axes = {norm_axis(a, x.rank, op) for a in axes}
    keep = flag(op, "keepdims", 1)
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else tuple(
        d for i, d in enumerate(x.shape) if i not in axes)
    return [x.with_shape(shape)]


def _reduce_dynamic_axes(op: Op, x: TensorType) -> list[TensorType]:
    """Axes known only at run time: the result rank still follows from keepdims (or
    from the static length of the axes operand); kept dims are unknown ('?')."""
    at = operand_type(op, 1)
    n = at.shape[0] if at.rank == 1 else None
    noop = op.attrs.get("noop_with_empty_axes", 0)
    if n == 0:
        if noop:
            return [x]
        return [x.with_shape((1,) * x.rank if op.attrs.get("keepdims", 1) else ())]
    if op.attrs.get("keepdims", 1):
        rank = x.rank
    elif isinstance(n, int) and n > 0:
        rank = x.rank - n
    else:
        return trusted(op, "reduction axes are not constant")
    if op.results and op.results[0].type.rank == rank and "<unknown>" not in op.results[0].type.shape:
        return trusted(op, "reduction axes are not constant")  # ONNX's (or a pass's) finer type
    if rank == x.rank:
        return [x.with_shape(tuple(1 if d == 1 else "?" for d in x.shape))]
    return [x.with_shape(("?",) * rank)]


REDUCE_ATTRS = {"axes": IS, "keepdims": _i(1), "noop_with_empty_axes": _i(0)}
for _name in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"):
    define(_name, operands=(1, 2), infer=_reduce, attrs=REDUCE_ATTRS, engines=VECTOR_ONLY)


def _arg(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    a = norm_axis(op.attrs.get("axis", 0), x.rank, op)
    shape = tuple(1 if i == a else d for i, d in enumerate(x.shape)) if flag(op, "keepdims", 1) else tuple(
        d for i, d in enumerate(x.shape) if i != a)
    return [TensorType(DType.i64, shape)]


for _name in ("ArgMax", "ArgMin"):
    define(_name, operands=1, infer=_arg, engines=VECTOR_ONLY, attrs={"axis": _i(0), "keepdims": _i(1), "select_last_index": _i(0)})


# --- shape and data movement --------------------------------------------------------------
def _reshape(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    shape = shape_operand(op, 1)
    if shape is None:
        return trusted(op, "Reshape target shape is not constant")
    if not op.attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    if -1 in shape:
        shape[shape.index(-1)] = _infer_minus_one(list(x.shape), shape)
    if x.is_static and all(isinstance(d, int) for d in shape) and int(np.prod(shape)) != x.numel:
        raise TypeInferenceError(f"Reshape of {x} to {shape} changes the element count")
    return [x.with_shape(tuple(shape))]


def _infer_minus_one(src: list, dst: list) -> int | str:
    """The -1 of a Reshape target: element count of `src` over the other target dims,
    symbolically (``[N, S, 64] -> [N, -1, 16]`` gives ``4*S``); "?" when not exact."""
    rest = [d for d in dst if d != -1]
    if all(isinstance(d, int) for d in list(src) + rest):
        known = int(np.prod(rest))
        return int(np.prod(src)) // known if known else 0
    return dim_div(dim_prod(src), dim_prod(rest))


define("Reshape", operands=2, infer=_reshape, engines=VECTOR_ONLY, traits={VIEW, MOVES_DATA, FP16_SAFE, HOMOGENEOUS}, attrs={"allowzero": _i(0)})


def _flatten(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    a = op.attrs.get("axis", 1)
    if not -x.rank <= a <= x.rank:  # axis r flattens to [N, 1]
        raise TypeInferenceError(f"Flatten: axis {a} out of range [-{x.rank}, {x.rank}]")
    a = a + x.rank if a < 0 else a
    return [x.with_shape((dim_prod(x.shape[:a]), dim_prod(x.shape[a:])))]


define("Flatten", operands=1, infer=_flatten, engines=VECTOR_ONLY, traits={VIEW, MOVES_DATA, FP16_SAFE, HOMOGENEOUS}, attrs={"axis": _i(1)})


def _axes_of(op: Op, i: int) -> list[int] | None:
    if op.attrs.get("axes") is not None:
        return list(op.attrs["axes"])
    if len(op.operands) > i and op.operands[i] is not None:
        c = const_operand(op, i)
        return None if c is None else [int(a) for a in c.reshape(-1)]
    return []


def _squeeze(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    axes = _axes_of(op, 1)
    if axes is None:
        return trusted(op, "Squeeze axes are not constant")
    ax = {norm_axis(a, x.rank, op) for a in axes} if axes else {i for i, d in enumerate(x.shape) if d == 1}
    return [x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in ax))]


def _unsqueeze(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    axes = _axes_of(op, 1)
    if axes is None:
        return trusted(op, "Unsqueeze axes are not constant")
    r = x.rank + len(axes)
    ax = sorted(norm_axis(a, r, op) for a in axes)
    shape = list(x.shape)
    for a in ax:
        shape.insert(a, 1)
    return [x.with_shape(tuple(shape))]


define("Squeeze", operands=(1, 2), infer=_squeeze, engines=VECTOR_ONLY, traits={VIEW, MOVES_DATA, FP16_SAFE}, attrs={"axes": IS})
define("Unsqueeze", operands=(1, 2), infer=_unsqueeze, engines=VECTOR_ONLY, traits={VIEW, MOVES_DATA, FP16_SAFE}, attrs={"axes": IS})


def _transpose(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    perm = op.attrs.get("perm") or list(range(x.rank))[::-1]
    if sorted(int(p) for p in perm) != list(range(x.rank)):
        raise TypeInferenceError(f"Transpose: perm {list(perm)} is not a permutation of the {x.rank} axes")
    return [x.with_shape(tuple(x.shape[p] for p in perm))]


define("Transpose", operands=1, infer=_transpose, engines=VECTOR_ONLY, traits={MOVES_DATA, FP16_SAFE}, attrs={"perm": IS})


def _concat(op: Op) -> list[TensorType]:
    ts = [v.type for v in op.operands if v is not None]
    a = norm_axis(op.attrs["axis"], ts[0].rank, op)
    total: Dim = 0
    for t in ts:
        if t.rank != ts[0].rank or any(isinstance(p, int) and isinstance(q, int) and p != q
                                       for k, (p, q) in enumerate(zip(t.shape, ts[0].shape)) if k != a):
            raise TypeInferenceError(f"Concat: {t} does not concatenate with {ts[0]} on axis {a}")
        total = dim_add(total, t.shape[a])
    return [ts[0].with_shape(ts[0].shape[:a] + (total,) + ts[0].shape[a + 1:])]


define("Concat", operands=(1, None), infer=_concat, engines=VECTOR_ONLY, traits={FP16_SAFE}, attrs={"axis": Attr("int", required=True)})


def _split(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    a = norm_axis(op.attrs.get("axis", 0), x.rank, op)
    sizes = op.attrs.get("split")
    if sizes is None and len(op.operands) > 1 and op.operands[1] is not None:
        c = const_operand(op, 1)
        if c is None:
            return trusted(op, "Split sizes are not constant")
        sizes = [int(s) for s in c.reshape(-1)]
    n = len(op.results) or op.attrs.get("num_outputs")
    if not sizes:
        d = x.shape[a]
        if not isinstance(d, int):
            return trusted(op, "Split of a symbolic dimension")
        chunk = -(-d // n)
        sizes = [chunk] * (n - 1) + [d - chunk * (n - 1)]
    return [x.with_shape(x.shape[:a] + (s,) + x.shape[a + 1:]) for s in sizes]


define("Split", engines=VECTOR_ONLY, operands=(1, 2), infer=_split, traits={FP16_SAFE},
       attrs={"axis": _i(0), "split": IS, "num_outputs": I})


def _slice(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    vals = [shape_operand(op, i) for i in range(1, len(op.operands))]
    if any(v is None and op.operands[i + 1] is not None for i, v in enumerate(vals)):
        return trusted(op, "Slice bounds are not constant")
    starts, ends = vals[0], vals[1]
    axes = vals[2] if len(vals) > 2 and vals[2] is not None else list(range(len(starts)))
    steps = vals[3] if len(vals) > 3 and vals[3] is not None else [1] * len(starts)
    if not all(isinstance(v, int) for v in list(axes) + list(steps)):
        return trusted(op, "Slice axes and steps are not constant")
    shape = list(x.shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = norm_axis(int(a), x.rank, op)
        shape[a] = _sliced(shape[a], s, e, int(st))
    return [x.with_shape(tuple(shape))]


def _sliced(n: Dim, s: Dim, e: Dim, step: int) -> Dim:
    """The length of ``[s:e:step]`` of a dim of size `n`.  With symbols, bounds are
    taken as in range (a negative int counts from the end, ``>= 2**62`` is the end)."""
    if isinstance(n, int) and isinstance(s, int) and isinstance(e, int):
        return len(range(*slice(s, e, step).indices(n)))
    if step != 1:
        return "?"
    big = 2**62
    s = dim_add(n, s) if isinstance(s, int) and s < 0 else s
    e = n if isinstance(e, int) and e >= big else dim_add(n, e) if isinstance(e, int) and e < 0 else e
    return dim_sub(e, s)


define("Slice", engines=VECTOR_ONLY, operands=(3, 5), infer=_slice, traits={FP16_SAFE})  # data movement: exact


def _gather(op: Op) -> list[TensorType]:
    x, idx = operand_type(op, 0), operand_type(op, 1)
    a = norm_axis(op.attrs.get("axis", 0), x.rank, op)
    c, d = const_operand(op, 1), x.shape[a]
    if c is not None and c.size and c.dtype.kind in "iu" and isinstance(d, int) and not -d <= c.min() <= c.max() < d:
        raise TypeInferenceError(f"Gather: constant indices in [{c.min()}, {c.max()}] for an axis of {d}")
    return [x.with_shape(x.shape[:a] + idx.shape + x.shape[a + 1:])]


define("Gather", engines=VECTOR_ONLY, operands=2, infer=_gather, attrs={"axis": _i(0)}, traits={INDEXED_READ, FP16_SAFE})
define("GatherElements", engines=VECTOR_ONLY, operands=2, attrs={"axis": _i(0)}, traits={INDEXED_READ},
       infer=lambda op: [operand_type(op, 0).with_shape(operand_type(op, 1).shape)])


def _shape(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    start = op.attrs.get("start", 0)
    end = op.attrs.get("end")
    n = len(range(x.rank)[slice(start, end)])
    return [TensorType(DType.i64, (n,))]


define("Shape", engines=VECTOR_ONLY, operands=1, infer=_shape, attrs={"start": _i(0), "end": I})
define("Size", engines=VECTOR_ONLY, operands=1, infer=lambda op: [TensorType(DType.i64, ())])


def _expand(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    target = shape_operand(op, 1)
    if target is None:
        return trusted(op, "Expand shape is not constant")
    return [x.with_shape(broadcast([x.shape, tuple(target)]))]


define("Expand", engines=VECTOR_ONLY, operands=2, infer=_expand, traits={FP16_SAFE})


def _tile(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    reps = shape_operand(op, 1)
    if reps is None:
        return trusted(op, "Tile repeats are not constant")
    return [x.with_shape(tuple(dim_mul(d, r) for d, r in zip(x.shape, reps)))]


define("Tile", engines=VECTOR_ONLY, operands=2, infer=_tile, traits={FP16_SAFE})


def _constant_of_shape(op: Op) -> list[TensorType]:
    dims = shape_operand(op, 0)
    v = op.attrs.get("value")
    dtype = DType.from_numpy(v.dtype) if isinstance(v, np.ndarray) else DType.f32
    if dims is None:
        return trusted(op, "ConstantOfShape shape is not constant")
    return [TensorType(dtype, tuple(dims))]


define("ConstantOfShape", engines=VECTOR_ONLY, operands=1, infer=_constant_of_shape, attrs={"value": T})

__all__: list[str] = ["CONV_ATTRS", "matmul_shape"]
