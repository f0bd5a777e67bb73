"""One IR form per declared op: old-opset attribute forms become the latest ONNX form.

Declared ops in the IR always follow the *latest* ONNX definition of their kind
(so a runtime falling back to `onnx.reference` for a declared op uses the newest
implementation); opaque ops keep their own opset in attr ``opset``.

    Squeeze(%x) {axes = [0]}                      (opset 11)
      ->  Squeeze(%x, %axes)   with %axes = const dense<[0]>
    Conv(%x, %w) {auto_pad = "SAME_UPPER", ...}
      ->  Conv(%x, %w) {kernel_shape = [3, 3], pads = [1, 1, 1, 1], ...}
    Softmax(%x) {axis = 1} on tensor<2x3x4xf32>   (opset 11: softmax of the flattened [1:])
      ->  Flatten {axis = 1}, Softmax {axis = 1}, Reshape back to %x's shape

Each normalizer gets a `NodeBuild` and edits its operands/attrs in place, or
builds the replacement itself and returns the ONNX outputs' values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from ir.core import Value
from ir.errors import UnsupportedModelError
from ir.geometry import same_pads, transposed_out
from ir.types import TensorType

if TYPE_CHECKING:
    from compiler.frontend.importer import Importer

__all__ = ["NORMALIZERS", "NodeBuild", "normalize"]


@dataclass
class NodeBuild:
    imp: Importer
    node: onnx.NodeProto
    kind: str
    opset: int
    operands: list[Value | None]
    attrs: dict[str, Any]
    outputs: list[str] = field(default_factory=list)

    def const(self, array: np.ndarray, hint: str) -> Value:
        return self.imp.helper_const(np.asarray(array), f"{self.outputs[0] or self.kind}_{hint}")

    def set_operand(self, i: int, v: Value | None) -> None:
        while len(self.operands) <= i:
            self.operands.append(None)
        self.operands[i] = v

    def fail(self, why: str) -> UnsupportedModelError:
        name = repr(self.node.name) if self.node.name else "(unnamed)"
        return UnsupportedModelError(f"{self.node.op_type} (node {name}, opset {self.opset}): {why}")


Normalizer = Callable[[NodeBuild], "list[Value] | None"]
NORMALIZERS: dict[str, Normalizer] = {}


def _normalizer(*kinds: str):
    def deco(fn: Normalizer) -> Normalizer:
        for k in kinds:
            NORMALIZERS[k] = fn
        return fn

    return deco


def normalize(nb: NodeBuild) -> list[Value] | None:
    fn = NORMALIZERS.get(nb.kind)
    return fn(nb) if fn else None


def _ints_to_operand(nb: NodeBuild, attr: str, index: int) -> None:
    """Move an INTS attribute (old opsets) into an i64 const operand (new opsets)."""
    if attr in nb.attrs:
        nb.set_operand(index, nb.const(np.asarray(nb.attrs.pop(attr), np.int64), attr))


@_normalizer("Squeeze", "Unsqueeze")
def _squeeze(nb: NodeBuild) -> None:
    _ints_to_operand(nb, "axes", 1)


@_normalizer("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
             "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
def _reduce(nb: NodeBuild) -> None:
    _ints_to_operand(nb, "axes", 1)


@_normalizer("Split")
def _split(nb: NodeBuild) -> None:
    _ints_to_operand(nb, "split", 1)
    if (len(nb.operands) < 2 or nb.operands[1] is None) and "num_outputs" not in nb.attrs:
        nb.attrs["num_outputs"] = len(nb.outputs)


@_normalizer("Slice")
def _slice(nb: NodeBuild) -> None:
    if nb.opset < 10:
        starts = nb.attrs.pop("starts")
        ends = nb.attrs.pop("ends")
        axes = nb.attrs.pop("axes", None)
        nb.set_operand(1, nb.const(np.asarray(starts, np.int64), "starts"))
        nb.set_operand(2, nb.const(np.asarray(ends, np.int64), "ends"))
        if axes is not None:
            nb.set_operand(3, nb.const(np.asarray(axes, np.int64), "axes"))


def _scalar_like(nb: NodeBuild, x: Value, v: float) -> np.ndarray:
    return np.asarray(v, dtype=x.type.dtype.numpy)


@_normalizer("Pad")
def _pad(nb: NodeBuild) -> None:
    if "pads" in nb.attrs:
        x = nb.operands[0]
        nb.set_operand(1, nb.const(np.asarray(nb.attrs.pop("pads"), np.int64), "pads"))
        value = nb.attrs.pop("value", 0.0)
        if value != 0.0:
            nb.set_operand(2, nb.const(_scalar_like(nb, x, value), "value"))
    nb.attrs.pop("value", None)


@_normalizer("Clip")
def _clip(nb: NodeBuild) -> None:
    if nb.opset < 11:
        x = nb.operands[0]
        lo, hi = nb.attrs.pop("min", None), nb.attrs.pop("max", None)
        if lo is not None:
            nb.set_operand(1, nb.const(_scalar_like(nb, x, lo), "min"))
        if hi is not None:
            nb.set_operand(2, nb.const(_scalar_like(nb, x, hi), "max"))


@_normalizer("Dropout")
def _dropout(nb: NodeBuild) -> None:
    if "ratio" in nb.attrs:
        nb.set_operand(1, nb.const(np.asarray(nb.attrs.pop("ratio"), np.float32), "ratio"))
    nb.attrs.pop("is_test", None)


@_normalizer("TopK")
def _topk(nb: NodeBuild) -> None:
    if "k" in nb.attrs:  # opset < 10: k is an attribute
        nb.set_operand(1, nb.const(np.asarray([nb.attrs.pop("k")], np.int64), "k"))


@_normalizer("ConstantOfShape")
def _constant_of_shape(nb: NodeBuild) -> None:
    nb.attrs.setdefault("value", np.zeros(1, np.float32))


@_normalizer("Softmax", "LogSoftmax", "Hardmax")
def _softmax(nb: NodeBuild) -> list[Value] | None:
    if nb.opset >= 13:
        return None
    x = nb.operands[0]
    axis = nb.attrs.pop("axis", 1)
    rank = x.type.rank
    axis = axis + rank if axis < 0 else axis
    if axis >= rank - 1:
        nb.attrs["axis"] = rank - 1 if rank else -1
        return None
    # opset < 13: the op works on x coerced to 2D at `axis`
    imp = nb.imp
    flat = imp.emit("Flatten", [x], {"axis": axis}, [imp.fresh(f"{nb.outputs[0]}_2d")]).result
    sm = imp.emit(nb.kind, [flat], {**nb.attrs, "axis": 1}, [imp.fresh(f"{nb.outputs[0]}_2d_out")]).result
    shape = imp.emit("Shape", [x], {}, [imp.fresh(f"{nb.outputs[0]}_shape")]).result
    out = imp.emit("Reshape", [sm, shape], {}, [nb.outputs[0]], result_types=[x.type]).result
    return [out]


# --- auto_pad ---------------------------------------------------------------------------
def _explicit_pads(nb: NodeBuild, kernel: list[int], transpose: bool = False) -> None:
    auto = nb.attrs.pop("auto_pad", "NOTSET")
    x = nb.operands[0]
    nsp = x.type.rank - 2
    if auto in ("NOTSET", ""):
        return
    if auto == "VALID":
        nb.attrs["pads"] = [0] * (2 * nsp)
        return
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise nb.fail(f"unknown auto_pad {auto!r}")
    strides = nb.attrs.get("strides") or [1] * nsp
    dil = nb.attrs.get("dilations") or [1] * nsp
    begin, end = [], []
    for i in range(nsp):
        n = x.type.shape[2 + i]
        if transpose:
            if nb.attrs.get("output_shape"):
                return  # padding follows from output_shape; keep the ONNX form
            out_pad = (nb.attrs.get("output_padding") or [0] * nsp)[i]
            if not isinstance(n, int):
                raise nb.fail("auto_pad SAME needs static spatial dimensions (give input_shapes)")
            # SAME for a transposed conv: the output is n * stride long
            total = max(transposed_out(n, kernel[i], strides[i], dil[i], 0, 0, out_pad) - n * strides[i], 0)
            small, big = total // 2, total - total // 2
            b, e = (small, big) if auto == "SAME_UPPER" else (big, small)
        else:
            if not isinstance(n, int):
                raise nb.fail("auto_pad SAME needs static spatial dimensions (give input_shapes)")
            b, e = same_pads(n, kernel[i], strides[i], dil[i], auto == "SAME_UPPER")
        begin.append(b)
        end.append(e)
    nb.attrs["pads"] = begin + end


def _check_channels(nb: NodeBuild) -> None:
    """Channels the weight expects vs the input's (ONNX shape inference does not check them;
    onnxruntime fails at run time)."""
    x, w = nb.operands[0], nb.operands[1]
    group = nb.attrs.get("group", 1)
    if x is None or w is None or x.type.rank < 3 or w.type.rank != x.type.rank:
        return
    if not isinstance(group, int) or group < 1:
        raise nb.fail(f"group {group!r} must be a positive integer")
    c, wc, wo = x.type.shape[1], w.type.shape[1], w.type.shape[0]
    if nb.kind == "Conv":
        want, per_group = (wc * group if isinstance(wc, int) else None), wo
    else:
        want, per_group = wo, wo
    if isinstance(c, int) and want is not None and c != want:
        raise nb.fail(f"the input has {c} channels, the weight {w.type} with group {group} expects {want}")
    if isinstance(per_group, int) and per_group % group:
        raise nb.fail(f"weight {w.type}: {per_group} channels do not split into {group} groups")


@_normalizer("Conv", "ConvTranspose")
def _conv(nb: NodeBuild) -> None:
    _check_channels(nb)
    w = nb.operands[1]
    if not nb.attrs.get("kernel_shape"):
        nb.attrs["kernel_shape"] = [int(d) for d in w.type.shape[2:]]
    _explicit_pads(nb, nb.attrs["kernel_shape"], transpose=nb.kind == "ConvTranspose")


@_normalizer("MaxPool", "AveragePool", "LpPool")
def _pool(nb: NodeBuild) -> None:
    _explicit_pads(nb, nb.attrs["kernel_shape"])


_ = TensorType  # re-exported type used in annotations of helpers
