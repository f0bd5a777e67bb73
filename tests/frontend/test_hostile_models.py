"""Issue 17 (3): a frontend that cannot be bombed.  Every malformed or hostile model ends
with exit 3 and one error line naming what is wrong -- never exit 1 (internal error),
never an `.om` with negative shapes; what onnxruntime rejects, atcpy rejects."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from compiler.cli import main as atcpy
from compiler.frontend.onnx_model import load_model
from compiler.frontend.validate import NODE_BUDGET
from ir.errors import UnsupportedModelError
from tests.frontend.hostile import CASES, function_bomb

SOC = "Ascend310P3"

# the cases of the issue: exit 3 whatever onnxruntime thinks of them
ISSUE_CASES = [
    "function_recursive", "shape_mismatch_add", "shape_mismatch_matmul", "sparse_bad_indices", "op_type_not_utf8",
    "node_without_outputs", "node_empty_output", "init_dtype_999", "init_bfloat16", "conv_kernel_too_big",
    "conv_negative_pads", "conv_zero_strides", "maxpool_window_too_big", "avgpool_negative_pads",
    "duplicate_node_output", "duplicate_graph_input", "softmax_axis_42", "softmax_axis_float", "opset_99",
    "ir_version_99", "conv_group_mismatch",
]
# node-level failures name the node (every builder calls it 'n0')
NAMES_NODE = ["shape_mismatch_add", "conv_kernel_too_big", "conv_negative_pads", "conv_zero_strides",
              "maxpool_window_too_big", "avgpool_negative_pads", "softmax_axis_42", "softmax_axis_float",
              "conv_group_mismatch", "node_without_outputs", "node_empty_output", "op_type_not_utf8"]


def _compile(tmp_path: Path, data: bytes, capsys, *extra: str) -> tuple[int, str]:
    model = tmp_path / "m.onnx"
    model.write_bytes(data)
    rc = atcpy([f"--model={model}", f"--soc_version={SOC}", f"--output={tmp_path / 'm'}", *extra])
    return rc, capsys.readouterr().err


def _ort_rejects(data: bytes) -> bool:
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001  (onnxruntime raises several kinds)
        return True
    return False


@pytest.mark.parametrize("name", ISSUE_CASES)
def test_issue_case_exits_3(name, tmp_path, capsys):
    rc, err = _compile(tmp_path, CASES[name](), capsys)
    assert rc == 3, err
    assert err.startswith("atcpy: error: unsupported model: ") and err.count("\n") == 1, err
    assert not (tmp_path / "m.om").exists()
    if name in NAMES_NODE:
        assert "n0" in err, err


def test_malformed_models_never_internal_error_and_match_onnxruntime(tmp_path, capsys):
    """Every malformed model: no exit 1; what onnxruntime refuses to load, atcpy refuses (3)."""
    assert len(CASES) >= 30
    wrong = {}
    for name, build in CASES.items():
        data = build()
        sub = tmp_path / name
        sub.mkdir()
        rc, err = _compile(sub, data, capsys)
        if rc == 1 or (_ort_rejects(data) and rc != 3):
            wrong[name] = (rc, err.strip()[:200])
    assert not wrong, wrong


def test_function_bomb_rejected_fast_with_the_count(tmp_path, capsys):
    """25 nested functions, each calling the next twice: 2**24 nodes once inlined, from 2 KB."""
    data = function_bomb(25)
    assert len(data) < 4096
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(UnsupportedModelError, match=f"{2**24} nodes; atcpy inlines at most {NODE_BUDGET}"):
        load_model(data)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 10 and peak < 2**30, (seconds, peak)
    rc, err = _compile(tmp_path, data, capsys)
    assert rc == 3 and str(2**24) in err, err


def test_small_nested_functions_still_inline(tmp_path, capsys):
    rc, err = _compile(tmp_path, function_bomb(6), capsys)
    assert rc == 0, err
    assert len(load_model(function_bomb(6)).proto.graph.node) == 2**5


def _conv_model() -> bytes:
    import numpy as np
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Conv", ["input", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
                          [numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("shape, says", [
    ("1,1,100000,100000", "does not fit in memory"),  # 149 GiB of activations
    ("1,3,8,8", "node 'conv'"),                        # 3 channels, the weight wants 1
    ("1,1,0,0", "does not fit the padded input"),      # a 3x3 window on 0 + 1 + 1
])
def test_input_shape_overrides_that_break_the_model(shape, says, tmp_path, capsys):
    rc, err = _compile(tmp_path, _conv_model(), capsys, f"--input_shape=input:{shape}")
    assert rc == 3 and says in err, err


# bench/fuzz_onnx.py's findings: exit 3 (not 1, not a hang, not an .om) naming the value or node
FUZZ_CASES = {
    "init_dims_2_31_one_value": "initializer 'st' declares dims [2147483648] (2147483648 elements of INT64) "
                                "but holds 8 bytes",
    "constant_dims_2_31_no_data": "node 'n0' (Constant): attribute 'value' declares dims [2147483648]",
    "output_declared_int64": "graph output 'h' is declared tensor(int64), but node 'n0' (Relu) produces tensor(float)",
    "output_declared_undefined": "graph output 'h' declares a tensor type without an element type",
    "value_info_declared_int32": "value_info 'h' is declared tensor(int32), but node 'n0' (Relu) produces",
    "cast_to_int64_output_float": "graph output 'h' is declared tensor(float), but node 'n0' (Cast) produces "
                                  "tensor(int64)",
    "softmax_axis_2_40": "node 'n0', opset 17): type inference failed: Softmax: axis 1099511627776 out of range",
    "gemm_transb_2_40": "node 'n0', opset 17): type inference failed: Gemm: inner dimensions differ",
    "gather_constant_index_out_of_range": "node 'n0', opset 17): type inference failed: Gather: constant indices "
                                          "in [0, 3] for an axis of 3",
    "pad_crops_below_zero": "node 'n0', opset 17): type inference failed: Pad: pads -2, -2 crop axis 1 of 3 below 0",
    "conv_bias_is_the_input": "node 'n0', opset 17): type inference failed: Conv: a bias tensor<1x3x8x8xf32> for 4 "
                              "output channels",
    "flatten_axis_2_40": "node 'n0', opset 17): type inference failed: Flatten: axis 1099511627776 out of range",
    "conv_kernel_shape_not_the_weights": "node 'n0', opset 17): type inference failed: Conv: kernel_shape [2, 3] is "
                                         "not the weight's window [3, 3]",
    "reduce_keepdims_3": "node 'n0', opset 17): type inference failed: ReduceMean: keepdims must be 0 or 1, got 3",
}


@pytest.mark.parametrize("name", sorted(FUZZ_CASES))
def test_fuzzer_finding_exits_3_naming_the_problem(name, tmp_path, capsys):
    t0 = time.perf_counter()
    rc, err = _compile(tmp_path, CASES[name](), capsys)
    assert rc == 3 and FUZZ_CASES[name] in err, err
    assert err.count("\n") == 1 and not (tmp_path / "m.om").exists(), err
    assert time.perf_counter() - t0 < 10  # the 2**31-element initializer once hung in data propagation


def _declared_model(shape, *, value_info: bool = False) -> bytes:
    """Relu -> Neg whose output (or intermediate) declares the right element type and `shape`."""
    from onnx import helper

    F = onnx.TensorProto.FLOAT
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="a"), helper.make_node("Neg", ["h"], ["y"], name="b")]
    vi = [helper.make_tensor_value_info("h", F, shape)] if value_info else []
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [2, 3])],
                          [helper.make_tensor_value_info("y", F, None if value_info else shape)], value_info=vi)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("shape, value_info", [([5], False), ([2, 4], False), (None, False), ([7], True)])
def test_a_declared_shape_that_disagrees_is_not_rejected(shape, value_info, tmp_path, capsys):
    """onnxruntime merges a disagreeing declared *shape* with a warning and runs the model;
    only the element type must agree."""
    data = _declared_model(shape, value_info=value_info)
    assert not _ort_rejects(data)
    rc, err = _compile(tmp_path, data, capsys)
    assert rc == 0, err


def test_valid_tensors_of_every_storage_pass_the_size_check():
    """Packed 4-bit, complex, string and float16 tensors hold exactly what their dims say."""
    import numpy as np
    from onnx import helper, numpy_helper

    from compiler.frontend.validate import check_tensor_size

    T = onnx.TensorProto
    tensors = [helper.make_tensor("i4", T.INT4, [5], [1, 2, 3, 4, 5]),
               helper.make_tensor("c64", T.COMPLEX64, [2], [1 + 2j, 3 + 4j]),
               helper.make_tensor("s", T.STRING, [2], [b"a", b"b"]),
               helper.make_tensor("h", T.FLOAT16, [3], np.ones(3, np.float16)),
               helper.make_tensor("e", T.FLOAT, [0, 4], []),
               numpy_helper.from_array(np.ones((3, 5), np.float32), "raw"),
               helper.make_tensor("i4raw", T.INT4, [5], b"\x21\x43\x05", raw=True)]
    for t in tensors:
        check_tensor_size(t, t.name)
    short = T(name="short", data_type=T.FLOAT, dims=[4], float_data=[1.0, 2.0])
    with pytest.raises(UnsupportedModelError, match=r"'short' declares dims \[4\] \(4 elements of FLOAT\) but holds 2"):
        check_tensor_size(short, "'short'")


def test_a_dim_param_that_is_no_symbol_compiles_and_runs(tmp_path, capsys):
    """ONNX allows any dim_param text ("??"); the .om loader parses every dim, so the
    frontend names it a parseable symbol (it once reached codegen and ended in exit 1)."""
    import numpy as np

    from runtime import Session

    rc, err = _compile(tmp_path, CASES["dim_param_question_marks"](), capsys)
    assert rc == 0, err
    sess = Session(str(tmp_path / "m.om"))
    x = np.array([[-1.0, 2.0, -3.0, 4.0]] * 3, np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.maximum(x, 0))
