"""More first-class ONNX ops (latest-opset form), beyond the basics in `ir.ops.core`:
index/scatter ops, TopK, Einsum, Trilu, layout shuffles, and the one ONNX-ML op
skl2onnx classifiers need.

    %v, %i = TopK(%x, %k) {axis = -1, largest = 1, sorted = 1}
        : (tensor<2x10xf32>, tensor<1xi64>) -> (tensor<2x3xf32>, tensor<2x3xi64>)     (%k = const [3])
    %y = Einsum(%a, %b) {equation = "bij,bjk->bik"} : (tensor<2x3x4xf32>, tensor<2x4x5xf32>) -> tensor<2x3x5xf32>
"""

from __future__ import annotations

import math

import numpy as np

from ir.core import Op
from ir.ops._infer import broadcast, const_operand, norm_axis, operand_type, same_as, trusted
from ir.ops.shape import shape_operand
from ir.registry import INDEXED_READ, SHAPE_FROM_DATA, VECTOR_ONLY, Attr, TypeInferenceError, define
from ir.symbolic import UNKNOWN, dim_mul, dim_sub
from ir.types import Dim, DType, TensorType

__all__: list[str] = []


def _i(d: int) -> Attr:
    return Attr("int", d)


def _mul(a: Dim, b: Dim) -> Dim:
    return a * b if isinstance(a, int) and isinstance(b, int) else "?"


def _div(a: Dim, b: int) -> Dim:
    return a // b if isinstance(a, int) else "?"


define("Trilu", operands=(1, 2), infer=same_as(0), attrs={"upper": _i(1)},
       doc="%y = Trilu(%x, %k) {upper = 0} : keeps the lower triangle (k-th diagonal) of the last two dims")
define("CumSum", operands=2, infer=same_as(0), attrs={"exclusive": _i(0), "reverse": _i(0)})
define("LpNormalization", operands=1, infer=same_as(0), attrs={"axis": _i(-1), "p": _i(2)})
define("ScatterND", operands=3, infer=same_as(0), attrs={"reduction": Attr("str", "none")})
define("ScatterElements", operands=3, infer=same_as(0), attrs={"axis": _i(0), "reduction": Attr("str", "none")})


def _topk(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    a = norm_axis(op.attrs.get("axis", -1), x.rank, op)
    c = const_operand(op, 1)
    k: Dim = int(c.reshape(-1)[0]) if c is not None else "?"
    shape = x.shape[:a] + (k,) + x.shape[a + 1:]
    return [x.with_shape(shape), TensorType(DType.i64, shape)]


define("TopK", operands=2, infer=_topk, attrs={"axis": _i(-1), "largest": _i(1), "sorted": _i(1)})


def _nonzero(op: Op) -> list[TensorType]:
    return [TensorType(DType.i64, (operand_type(op, 0).rank, "?"))]


define("NonZero", operands=1, infer=_nonzero, traits={SHAPE_FROM_DATA},
       doc="%i = NonZero(%x) : (tensor<3x4xf32>) -> tensor<2x?xi64>  (the count is data dependent)")


def _onehot(op: Op) -> list[TensorType]:
    idx, values = operand_type(op, 0), operand_type(op, 2)
    c = const_operand(op, 1)
    depth: Dim = int(c.reshape(-1)[0]) if c is not None else "?"
    a = norm_axis(op.attrs.get("axis", -1), idx.rank + 1, op)
    shape = idx.shape[:a] + (depth,) + idx.shape[a:]
    return [TensorType(values.dtype, shape)]


define("OneHot", operands=3, infer=_onehot, attrs={"axis": _i(-1)})


def _gather_nd(op: Op) -> list[TensorType]:
    data, idx = operand_type(op, 0), operand_type(op, 1)
    b = op.attrs.get("batch_dims", 0)
    last = idx.shape[-1]
    if not isinstance(last, int):
        return trusted(op, "GatherND index depth is symbolic")
    return [data.with_shape(idx.shape[:-1] + data.shape[b + last:])]


define("GatherND", operands=2, infer=_gather_nd, attrs={"batch_dims": _i(0)}, traits={INDEXED_READ})


def _depth_to_space(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    b = op.attrs["blocksize"]
    n, c, h, w = x.shape
    return [x.with_shape((n, _div(c, b * b), _mul(h, b), _mul(w, b)))]


def _space_to_depth(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    b = op.attrs["blocksize"]
    n, c, h, w = x.shape
    return [x.with_shape((n, _mul(c, b * b), _div(h, b), _div(w, b)))]


define("DepthToSpace", operands=1, infer=_depth_to_space,
       attrs={"blocksize": Attr("int", required=True), "mode": Attr("str", "DCR")})
# `mode` on SpaceToDepth is opset 28+ (DCR is the only order before it)
define("SpaceToDepth", operands=1, infer=_space_to_depth,
       attrs={"blocksize": Attr("int", required=True), "mode": Attr("str", "DCR")})


def _eye_like(op: Op) -> list[TensorType]:
    x = operand_type(op, 0)
    dt = op.attrs.get("dtype")
    return [x.with_dtype(DType.from_onnx(dt)) if dt is not None else x]


define("EyeLike", operands=1, infer=_eye_like, attrs={"dtype": Attr("int"), "k": _i(0)})


def _einsum(op: Op) -> list[TensorType]:
    eq = op.attrs["equation"].replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    ts = [v.type for v in op.operands if v is not None]
    if len(terms) != len(ts):
        raise TypeInferenceError(f"Einsum {eq!r} names {len(terms)} operands, got {len(ts)}")
    dims: dict[str, Dim] = {}
    ell_shapes = []
    counts: dict[str, int] = {}
    for term, t in zip(terms, ts):
        letters = term.replace("...", "")
        n_ell = t.rank - len(letters) if "..." in term else 0
        pre, _, post = term.partition("...") if "..." in term else (term, "", "")
        ell_shapes.append(t.shape[len(pre):len(pre) + n_ell])
        for ch, d in zip(pre + post, t.shape[:len(pre)] + t.shape[len(pre) + n_ell:]):
            counts[ch] = counts.get(ch, 0) + 1
            if ch not in dims or dims[ch] == 1:
                dims[ch] = d
            elif isinstance(d, int) and isinstance(dims[ch], int) and d not in (1, dims[ch]):
                raise TypeInferenceError(f"Einsum {eq!r}: label {ch} is {dims[ch]} and {d}")
    ell = broadcast(ell_shapes) if any(ell_shapes) else ()
    if not arrow:  # implicit output: the labels used once, in alphabetical order
        rhs = ("..." if any("..." in t for t in terms) else "") + "".join(
            sorted(ch for ch, n in counts.items() if n == 1))
    pre, _e, post = rhs.partition("...")
    shape = tuple(dims[ch] for ch in pre) + (tuple(ell) if _e else ()) + tuple(dims[ch] for ch in post)
    return [TensorType(ts[0].dtype, shape)]


define("Einsum", operands=(1, None), infer=_einsum, attrs={"equation": Attr("str", required=True)})


# --- Resize / Upsample ----------------------------------------------------------------
def _resize_shape(x: TensorType, scales, sizes: list[Dim] | None, axes: list[int] | None,
                  policy: str) -> tuple[Dim, ...] | None:
    """The result shape onnx.reference / onnxruntime give, or None when it is not known
    from the constant `scales` (floor(d * s)) or the constant / ``sym.dims`` `sizes`
    (with ``keep_aspect_ratio_policy``)."""
    r = x.rank
    ax = [a + r if a < 0 else a for a in axes] if axes else list(range(r))
    if sizes:
        if len(sizes) != len(ax):
            raise TypeInferenceError(f"Resize: {len(sizes)} sizes for {len(ax)} axes")
        out: list[Dim] = list(x.shape)
        for a, d in zip(ax, sizes):
            out[a] = d
        if policy in ("", "stretch"):
            return tuple(out)
        if not all(isinstance(x.shape[a], int) for a in ax) or not all(isinstance(d, int) for d in sizes):
            return None
        ratios = [d / x.shape[a] for a, d in zip(ax, sizes)]  # type: ignore[operator]
        k = min(ratios) if policy == "not_larger" else max(ratios)
        for a in ax:
            out[a] = int(k * x.shape[a] + 0.5)  # type: ignore[operator]
        return tuple(out)
    if scales is not None and scales.size:
        if scales.size != len(ax):
            raise TypeInferenceError(f"Resize: {scales.size} scales for {len(ax)} axes")
        out = list(x.shape)
        for a, s in zip(ax, scales.reshape(-1).tolist()):
            d = x.shape[a]
            if isinstance(d, int):
                out[a] = int(d * s)
            else:  # floor(d * s) of a symbol is an expression only for a whole scale
                out[a] = dim_mul(d, int(s)) if float(s).is_integer() and s >= 1 else UNKNOWN
        return tuple(out)
    return None


def _resize(op: Op) -> list[TensorType]:
    """Resize(X, roi, scales, sizes); the opset-10 form Resize(X, scales) has two operands.
    The shape follows from constant `scales` or `sizes` (or sizes of the shape program),
    so it is known once they fold; otherwise the op keeps the type it has."""
    x = operand_type(op, 0)
    if len(op.operands) == 2:  # opset 10 (opset 11+ needs scales or sizes after roi)
        scales, sizes = const_operand(op, 1), None
    else:
        scales, sizes = const_operand(op, 2), shape_operand(op, 3)
    if op.attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        return trusted(op, "tf_crop_and_resize's result shape depends on roi")
    shape = _resize_shape(x, scales, sizes, op.attrs.get("axes"), op.attrs.get("keep_aspect_ratio_policy") or "")
    if shape is None:
        return trusted(op, "Resize's scales/sizes are not constant")
    return [x.with_shape(shape)]


def _upsample(op: Op) -> list[TensorType]:
    """Upsample(X, scales) (opset 9; older forms are upgraded to it on import)."""
    x = operand_type(op, 0)
    shape = _resize_shape(x, const_operand(op, 1), None, None, "")
    return [x.with_shape(shape)] if shape is not None else trusted(op, "Upsample's scales are not constant")


# No defaults: a Resize keeps the attributes its opset gave it (opset 10 and 11+ differ in
# their coordinate mapping), and the runtime evaluates it at the model's opset.
define("Resize", operands=(1, 4), infer=_resize, engines=VECTOR_ONLY,
       attrs={"antialias": Attr("int"), "axes": Attr("ints"), "coordinate_transformation_mode": Attr("str"),
              "cubic_coeff_a": Attr("float"), "exclude_outside": Attr("int"), "extrapolation_value": Attr("float"),
              "keep_aspect_ratio_policy": Attr("str"), "mode": Attr("str"), "nearest_mode": Attr("str")},
       doc="%y = Resize(%x, none, none, %sizes) {mode = \"nearest\"} : (tensor<1x8x8x8xf32>, tensor<4xi64>) -> "
           "tensor<1x8x16x16xf32>  (%sizes = const [1, 8, 16, 16])")
define("Upsample", operands=(1, 2), infer=_upsample, engines=VECTOR_ONLY,
       attrs={"mode": Attr("str"), "scales": Attr("floats")},
       doc="%y = Upsample(%x, %s) {mode = \"nearest\"} : (tensor<1x8x8x8xf32>, tensor<4xf32>) -> "
           "tensor<1x8x16x16xf32>  (%s = const [1, 1, 2, 2])")


# --- ONNX-ML ------------------------------------------------------------------------
def _array_feature_extractor(op: Op) -> list[TensorType]:
    """Follows onnx.reference / onnxruntime: a rank-1 input gives a [1, n] result."""
    data, idx = operand_type(op, 0), operand_type(op, 1)
    if idx.rank == 1 or (idx.rank == 2 and idx.shape[0] == 1):
        add: Dim = idx.shape[-1]
    elif idx.rank == 2 and not isinstance(idx.shape[0], int):
        add = "?"  # [1, n] gives n, [m, n] gives m*n: unknown until m is
    else:
        add = math.prod(idx.shape) if idx.is_static else "?"
    shape = (1, add) if data.rank == 1 else data.shape[:-1] + (add,)
    return [data.with_shape(shape)]


define("ai.onnx.ml.ArrayFeatureExtractor", operands=2, infer=_array_feature_extractor,
       doc="%y = ai.onnx.ml.ArrayFeatureExtractor(%classes, %i) : (tensor<10xi64>, tensor<Nx1xi64>) -> tensor<1x?xi64>")


def _pad(op: Op) -> list[TensorType]:
    """Negative pads crop; cropping below an empty axis is an error."""
    x = operand_type(op, 0)
    pads = op.attrs.get("pads")
    if pads is None:
        c = const_operand(op, 1)
        if c is None:
            return trusted(op, "Pad amounts are not constant")
        pads = [int(p) for p in c.reshape(-1)]
    axes = list(range(x.rank))
    if len(op.operands) > 3 and op.operands[3] is not None:
        c = const_operand(op, 3)
        if c is None:
            return trusted(op, "Pad axes are not constant")
        axes = [norm_axis(int(a), x.rank, op) for a in c.reshape(-1)]
    shape = list(x.shape)
    n = len(axes)
    for j, a in enumerate(axes):
        if isinstance(shape[a], int):
            shape[a] = shape[a] + pads[j] + pads[j + n]
            if shape[a] < 0:
                raise TypeInferenceError(f"Pad: pads {pads[j]}, {pads[j + n]} crop axis {a} of {x.shape[a]} below 0")
    return [x.with_shape(tuple(shape))]


define("Pad", engines=VECTOR_ONLY, operands=(1, 4), infer=_pad,
       attrs={"mode": Attr("str", "constant"), "pads": Attr("ints"), "value": Attr("float")})


def _range(op: Op) -> list[TensorType]:
    vals = [const_operand(op, i) for i in range(3)]
    if all(v is not None for v in vals):
        s, lim, d = (v.item() for v in vals)
        return [TensorType(operand_type(op, 0).dtype, (max(int(np.ceil((lim - s) / d)), 0),))]
    dims = [shape_operand(op, i) for i in range(3)]
    if any(v is None or len(v) != 1 for v in dims) or dims[2] != [1]:
        return trusted(op, "Range bounds are not constant")
    return [TensorType(operand_type(op, 0).dtype, (dim_sub(dims[1][0], dims[0][0]),))]  # limit - start, step 1


define("Range", operands=3, infer=_range, engines=VECTOR_ONLY, attrs={"stash_type": Attr("int")})
