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
