"""Hostile and malformed ONNX models for the frontend's robustness tests (issue 17).

Each builder returns serialized model bytes (some cases cannot be expressed as a valid
`ModelProto` in Python, e.g. a non-UTF-8 ``op_type``), built with `onnx.helper`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["CASES", "function_bomb", "model_bytes"]

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def model_bytes(nodes, inputs, outputs, inits=(), *, opset: int = 17, ir_version: int | None = None,
                functions=(), sparse=(), value_info=()) -> bytes:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits), value_info=list(value_info),
                          sparse_initializer=list(sparse))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("local", 1)],
                          functions=list(functions))
    if ir_version is not None:
        m.ir_version = ir_version
    return m.SerializeToString()


def _vi(name: str, shape, dtype: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _unary(op: str = "Relu", shape=(1, 4), **attrs) -> bytes:
    return model_bytes([helper.make_node(op, ["x"], ["y"], name="n0", **attrs)], [_vi("x", list(shape))],
                       [_vi("y", None)])


def function_bomb(depth: int) -> bytes:
    """`depth` nested model-local functions, each calling the next twice: 2**depth nodes inlined."""
    funcs = []
    for i in range(depth):
        if i == depth - 1:
            body = [helper.make_node("Relu", ["x"], ["y"])]
        else:
            body = [helper.make_node(f"f{i + 1}", ["x"], ["t"], domain="local"),
                    helper.make_node(f"f{i + 1}", ["t"], ["y"], domain="local")]
        funcs.append(helper.make_function("local", f"f{i}", ["x"], ["y"], body,
                                          [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]))
    return model_bytes([helper.make_node("f0", ["x"], ["y"], name="call", domain="local")], [_vi("x", [1, 4])],
                       [_vi("y", [1, 4])], functions=funcs)


def _recursive() -> bytes:
    f = helper.make_function("local", "f", ["x"], ["y"], [helper.make_node("f", ["x"], ["y"], domain="local")],
                             [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    return model_bytes([helper.make_node("f", ["x"], ["y"], name="call", domain="local")], [_vi("x", [1, 4])],
                       [_vi("y", [1, 4])], functions=[f])


def _binary(op: str, a, b, **attrs) -> bytes:
    return model_bytes([helper.make_node(op, ["a", "b"], ["y"], name="n0", **attrs)],
                       [_vi("a", list(a)), _vi("b", list(b))], [_vi("y", None)])


def _with_init(op: str, x, w: np.ndarray, **attrs) -> bytes:
    return model_bytes([helper.make_node(op, ["x", "w"], ["y"], name="n0", **attrs)], [_vi("x", list(x))],
                       [_vi("y", None)], [numpy_helper.from_array(w, "w")])


def _sparse_bad_indices() -> bytes:
    values = numpy_helper.from_array(np.ones(2, np.float32), "w")
    indices = numpy_helper.from_array(np.array([1, 100], np.int64), "w_idx")
    sp = helper.make_sparse_tensor(values, indices, [4])
    return model_bytes([helper.make_node("Add", ["x", "w"], ["y"], name="n0")], [_vi("x", [4])], [_vi("y", None)],
                       sparse=[sp])


def _non_utf8_op_type() -> bytes:
    data = _unary("Reluz")
    return data.replace(b"Reluz", b"Relu\xff")


def _init_dtype(dtype: int) -> bytes:
    t = TensorProto(name="w", data_type=dtype, dims=[4], raw_data=b"\0" * 8)
    return model_bytes([helper.make_node("Add", ["x", "w"], ["y"], name="n0")], [_vi("x", [4])], [_vi("y", None)],
                       [t])


def _bfloat16_init() -> bytes:
    t = helper.make_tensor("w", TensorProto.BFLOAT16, [4], [1.0, 2.0, 3.0, 4.0])
    cast = helper.make_node("Cast", ["w"], ["wf"], name="cast", to=F)
    return model_bytes([cast, helper.make_node("Add", ["x", "wf"], ["y"], name="n0")], [_vi("x", [4])],
                       [_vi("y", None)], [t])


def _conv(x, k: int, **attrs) -> bytes:
    return _with_init("Conv", x, np.ones((4, x[1], k, k), np.float32), **attrs)


def _dup_output() -> bytes:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")]
    return model_bytes(nodes, [_vi("x", [4])], [_vi("y", None)])


def _dup_input() -> bytes:
    return model_bytes([helper.make_node("Relu", ["x"], ["y"], name="a")], [_vi("x", [4]), _vi("x", [4])],
                       [_vi("y", None)])


def _dup_graph_output() -> bytes:
    return model_bytes([helper.make_node("Relu", ["x"], ["y"], name="a")], [_vi("x", [4])],
                       [_vi("y", None), _vi("y", None)])


def _float_axis() -> bytes:
    node = helper.make_node("Softmax", ["x"], ["y"], name="n0")
    node.attribute.append(helper.make_attribute("axis", 1.5))
    return model_bytes([node], [_vi("x", [2, 3])], [_vi("y", None)])


def _topo() -> bytes:
    nodes = [helper.make_node("Relu", ["t"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["t"], name="b")]
    return model_bytes(nodes, [_vi("x", [4])], [_vi("y", None)])


def _nodes(*nodes, x=(4,)) -> bytes:
    return model_bytes(list(nodes), [_vi("x", list(x))], [_vi("y", None)])


def _wrong_raw_size() -> bytes:
    t = TensorProto(name="w", data_type=F, dims=[4], raw_data=b"\0" * 6)
    return model_bytes([helper.make_node("Add", ["x", "w"], ["y"], name="n0")], [_vi("x", [4])], [_vi("y", None)],
                       [t])


def _huge_init_no_data() -> bytes:
    """An index initializer declaring 2**31 elements and holding one: no allocation, no hang."""
    st = TensorProto(name="st", data_type=I64, dims=[2**31], raw_data=np.zeros(1, np.int64).tobytes())
    inits = [st, numpy_helper.from_array(np.array([2], np.int64), "en")]
    return model_bytes([helper.make_node("Slice", ["x", "st", "en"], ["y"], name="n0")], [_vi("x", [4])],
                       [_vi("y", None)], inits)


def _huge_constant_no_data() -> bytes:
    t = TensorProto(name="c", data_type=F, dims=[2**31])
    nodes = [helper.make_node("Constant", [], ["c"], name="n0", value=t),
             helper.make_node("Add", ["x", "c"], ["y"], name="n1")]
    return model_bytes(nodes, [_vi("x", [1])], [_vi("y", None)])


def _declared(dtype: int, *, value_info: bool = False, op: str = "Relu", **attrs) -> bytes:
    """Relu/Cast -> Neg, with the graph output (or the intermediate's value_info) declared `dtype`."""
    nodes = [helper.make_node(op, ["x"], ["h"], name="n0", **attrs), helper.make_node("Neg", ["h"], ["y"], name="n1")]
    if value_info:
        return model_bytes(nodes, [_vi("x", [4])], [_vi("y", None)], value_info=[_vi("h", [4], dtype)])
    return model_bytes(nodes[:1], [_vi("x", [4])], [_vi("h", [4], dtype)])


_N = helper.make_node
CASES: dict[str, Callable[[], bytes]] = {
    "function_recursive": _recursive,
    "shape_mismatch_add": lambda: _binary("Add", (1, 3), (1, 4)),
    "shape_mismatch_matmul": lambda: _binary("MatMul", (2, 3), (4, 5)),
    "sparse_bad_indices": _sparse_bad_indices,
    "op_type_not_utf8": _non_utf8_op_type,
    "node_without_outputs": lambda: _nodes(_N("Relu", ["x"], [], name="n0"), _N("Neg", ["x"], ["y"], name="n1")),
    "node_empty_output": lambda: _nodes(_N("Relu", ["x"], [""], name="n0"), _N("Neg", ["x"], ["y"], name="n1")),
    "init_dtype_999": lambda: _init_dtype(999),
    "init_bfloat16": _bfloat16_init,
    "conv_kernel_too_big": lambda: _conv((1, 1, 4, 4), 25),
    "conv_negative_pads": lambda: _conv((1, 1, 4, 4), 3, pads=[-3, -3, -3, -3]),
    "conv_zero_strides": lambda: _conv((1, 1, 4, 4), 3, strides=[0, 0]),
    "maxpool_window_too_big": lambda: _unary("MaxPool", (1, 1, 4, 4), kernel_shape=[9, 9]),
    "avgpool_negative_pads": lambda: _unary("AveragePool", (1, 1, 4, 4), kernel_shape=[2, 2], pads=[-2, -2, 0, 0]),
    "duplicate_node_output": _dup_output,
    "duplicate_graph_input": _dup_input,
    "duplicate_graph_output": _dup_graph_output,
    "softmax_axis_42": lambda: _unary("Softmax", (2, 3), axis=42),
    "softmax_axis_float": _float_axis,
    "opset_99": lambda: model_bytes([_N("Relu", ["x"], ["y"])], [_vi("x", [4])], [_vi("y", None)], opset=99),
    "ir_version_99": lambda: model_bytes([_N("Relu", ["x"], ["y"])], [_vi("x", [4])], [_vi("y", None)],
                                         ir_version=99),
    "unknown_op": lambda: _unary("NoSuchOp"),
    "undefined_input": lambda: _nodes(_N("Add", ["x", "nowhere"], ["y"], name="n0")),
    "nodes_out_of_order": _topo,
    "output_not_produced": lambda: _nodes(_N("Relu", ["x"], ["t"], name="n0")),
    "concat_axis_out_of_range": lambda: _nodes(_N("Concat", ["x", "x"], ["y"], name="n0", axis=5)),
    "transpose_bad_perm": lambda: _unary("Transpose", (2, 3), perm=[0, 0]),
    "gather_axis_out_of_range": lambda: _binary("Gather", (2, 3), (2,), axis=4),
    "cast_to_999": lambda: _unary("Cast", (4,), to=999),
    "cast_without_to": lambda: _unary("Cast", (4,)),
    "relu_unknown_attribute": lambda: _unary("Relu", (4,), alpha=1.0),
    "reshape_incompatible": lambda: _with_init("Reshape", (2, 3), np.array([4, 4], np.int64)),
    "conv_group_mismatch": lambda: _conv((1, 3, 8, 8), 3, group=2),
    "gemm_k_mismatch": lambda: _binary("Gemm", (2, 3), (4, 5)),
    "init_raw_data_wrong_size": _wrong_raw_size,
    "input_dtype_999": lambda: model_bytes([_N("Relu", ["x"], ["y"])], [_vi("x", [4], 999)], [_vi("y", None)]),
    "squeeze_axis_out_of_range": lambda: _with_init("Squeeze", (1, 4), np.array([7], np.int64)),
    "reduce_axis_out_of_range": lambda: _unary("ReduceMax", (2, 3), axes=[9], keepdims=1),
    "split_sizes_wrong": lambda: _with_init("Split", (6,), np.array([2, 2], np.int64)),
    "init_dims_2_31_one_value": _huge_init_no_data,
    "constant_dims_2_31_no_data": _huge_constant_no_data,
    "output_declared_int64": lambda: _declared(I64),
    "output_declared_undefined": lambda: _declared(TensorProto.UNDEFINED),
    "value_info_declared_int32": lambda: _declared(TensorProto.INT32, value_info=True),
    "cast_to_int64_output_float": lambda: _declared(F, op="Cast", to=I64),
    "softmax_axis_2_40": lambda: _unary("Softmax", (2, 3), axis=2**40),
    "flatten_axis_out_of_range": lambda: _unary("Flatten", (2, 3), axis=5),
    "flatten_axis_2_40": lambda: _unary("Flatten", (2, 3), axis=2**40),
    "conv_kernel_shape_not_the_weights": lambda: _conv((1, 1, 8, 8), 3, kernel_shape=[2, 3]),
    "gemm_transb_2_40": lambda: _with_init("Gemm", (2, 8), np.ones((8, 16), np.float32), transB=2**40),
    "gather_constant_index_out_of_range": lambda: _with_init("Gather", (2, 3), np.array([0, 3], np.int64), axis=1),
    "pad_crops_below_zero": lambda: _with_init("Pad", (2, 3), np.array([0, -2, 0, -2], np.int64)),
    "conv_bias_is_the_input": lambda: model_bytes(
        [helper.make_node("Conv", ["x", "w", "x"], ["y"], name="n0")], [_vi("x", [1, 3, 8, 8])], [_vi("y", None)],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")]),
    "reduce_keepdims_3": lambda: _unary("ReduceMean", (2, 3), axes=[1], keepdims=3),
    "dim_param_question_marks": lambda: model_bytes([helper.make_node("Relu", ["x"], ["y"], name="n0")],
                                                    [_vi("x", ["??", 4])], [_vi("y", None)]),
}
