"""Property: the registry's type inference agrees with onnx.shape_inference on random
shapes (elementwise broadcast, MatMul, Conv, pools, Reshape, Transpose, Concat)."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from compiler.frontend import import_onnx
from ir import DType, verify
from tests.frontend.helpers import one_node_model, onnx_inferred_output

F = TensorProto.FLOAT
SETTINGS = settings(max_examples=30, deadline=None)
dims = st.integers(1, 6)


def _check(model, run: bool = False) -> None:
    """Import strictly (any disagreement raises) and compare the output exactly with ONNX
    shape inference, or (`run`) with the shape onnxruntime, the oracle, actually produces."""
    g = import_onnx(model, strict=True)
    verify(g)
    elem, shape = onnx_inferred_output(model)
    if run:
        import onnxruntime as ort

        feeds = {i.name: np.zeros([d.dim_value for d in i.type.tensor_type.shape.dim], np.float32)
                 for i in model.graph.input}
        m = onnx.ModelProto()
        m.CopyFrom(model)
        m.ir_version = min(m.ir_version, 8)  # what the installed onnxruntime reads
        for o in m.graph.output:
            o.type.tensor_type.elem_type = o.type.tensor_type.elem_type or onnx.TensorProto.FLOAT
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        shape = list(sess.run(None, feeds)[0].shape)
    out = g.outputs[0].type
    assert out.dtype is DType.from_onnx(elem)
    assert list(out.shape) == shape


@st.composite
def broadcastable(draw):
    rank = draw(st.integers(0, 4))
    base = draw(st.lists(dims, min_size=rank, max_size=rank))
    other_rank = draw(st.integers(0, rank))
    other = [d if draw(st.booleans()) else 1 for d in base[rank - other_rank:]]
    a, b = (base, other) if draw(st.booleans()) else (other, base)
    a = [1 if draw(st.integers(0, 4)) == 0 else d for d in a]
    return a, b


@SETTINGS
@given(broadcastable(), st.sampled_from(["Add", "Mul", "Sub", "Div", "Pow", "Max", "Where_", "Less"]))
def test_elementwise_broadcast(shapes, op):
    a, b = shapes
    if op == "Where_":
        m = one_node_model("Where", {"c": (TensorProto.BOOL, a), "a": (F, b), "b": (F, a)}, ["y"])
    else:
        m = one_node_model(op, {"a": (F, a), "b": (F, b)}, ["y"])
    _check(m)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 3), st.lists(dims, min_size=0, max_size=2), dims, dims, dims,
       st.booleans())
def test_matmul(ra, rb, batch, m_, k, n, bcast):
    a = batch[len(batch) - max(ra - 2, 0):] + ([m_, k] if ra >= 2 else [k])
    bb = [1 if bcast else d for d in batch][len(batch) - max(rb - 2, 0):]
    b = bb + ([k, n] if rb >= 2 else [k])
    _check(one_node_model("MatMul", {"a": (F, a), "b": (F, b)}, ["y"]))


@st.composite
def conv_case(draw):
    nsp = draw(st.integers(1, 2))
    k = draw(st.lists(st.integers(1, 3), min_size=nsp, max_size=nsp))
    s = draw(st.lists(st.integers(1, 3), min_size=nsp, max_size=nsp))
    d = draw(st.lists(st.integers(1, 2), min_size=nsp, max_size=nsp))
    p = draw(st.lists(st.integers(0, 2), min_size=2 * nsp, max_size=2 * nsp))
    size = [draw(st.integers((k[i] - 1) * d[i] + 1, 12)) for i in range(nsp)]
    auto = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    return nsp, k, s, d, p, size, auto


@SETTINGS
@given(conv_case(), st.integers(1, 2), st.integers(1, 4))
def test_conv(case, group, cout_per_group):
    _nsp, k, s, d, p, size, auto = case
    cin = 2 * group
    w = np.zeros((cout_per_group * group, cin // group, *k), np.float32)
    attrs = {"strides": s, "dilations": d, "group": group}
    if auto == "NOTSET":
        attrs["pads"] = p
    else:
        attrs["auto_pad"] = auto
    _check(one_node_model("Conv", {"x": (F, [2, cin, *size])}, ["y"], inits={"w": w}, **attrs))


@SETTINGS
@given(conv_case(), st.sampled_from(["MaxPool", "AveragePool"]), st.booleans())
def test_pool(case, kind, ceil):
    _nsp, k, s, d, p, size, auto = case
    p = [min(pi, ki - 1) for pi, ki in zip(p, k + k)]  # ONNX: pads smaller than the kernel
    attrs = {"kernel_shape": k, "strides": s, "ceil_mode": int(ceil)}
    if kind == "MaxPool":
        attrs["dilations"] = d
    if auto == "NOTSET" or ceil:  # ceil_mode with auto_pad is not defined by the reference
        attrs["pads"] = p
    else:
        attrs["auto_pad"] = auto
    # ceil_mode's last window: ONNX shape inference, onnx.reference and onnxruntime disagree
    # at the edges (a window starting in the right padding); compare with onnxruntime's run
    _check(one_node_model(kind, {"x": (F, [1, 3, *size])}, ["y"], **attrs), run=ceil)


@SETTINGS
@given(st.lists(dims, min_size=1, max_size=4), st.data())
def test_reshape(shape, data):
    n = int(np.prod(shape))
    divisors = [q for q in range(1, n + 1) if n % q == 0]
    a = data.draw(st.sampled_from(divisors))
    target = [a, -1] if data.draw(st.booleans()) else [a, n // a]
    if data.draw(st.booleans()) and len(shape) >= 1:
        target = [0, -1]  # copy dim 0
    _check(one_node_model("Reshape", {"x": (F, shape)}, ["y"], inits={"s": np.array(target, np.int64)}))


@SETTINGS
@given(st.lists(dims, min_size=1, max_size=5), st.data())
def test_transpose(shape, data):
    perm = data.draw(st.permutations(list(range(len(shape)))))
    _check(one_node_model("Transpose", {"x": (F, shape)}, ["y"], perm=list(perm)))


@SETTINGS
@given(st.lists(dims, min_size=1, max_size=4), st.integers(1, 4), st.data())
def test_concat(shape, n, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    ins = {}
    for i in range(n):
        s = list(shape)
        s[axis] = data.draw(dims)
        ins[f"x{i}"] = (F, s)
    _check(one_node_model("Concat", ins, ["y"], axis=axis))
