"""``--mode=3`` on a model with bounded dims runs it at both ends of the bounds,
so a model that only fails at some shapes in range is not reported as fine."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from compiler.cli import main as atcpy


def _model(path) -> str:
    """x [1, S] reshaped to a fixed [1, 8]: only S = 8 runs."""
    g = h.make_graph([h.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, "S"])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 8])],
                     [nh.from_array(np.array([1, 8], np.int64), "shape")])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return str(path)


def test_precheck_runs_at_the_lower_and_upper_bounds(tmp_path, capsys):
    m = _model(tmp_path / "m.onnx")
    assert atcpy(["--mode=3", f"--model={m}", "--soc_version=Ascend310P3", "--dim_range=S:8~8"]) == 0
    capsys.readouterr()
    assert atcpy(["--mode=3", f"--model={m}", "--soc_version=Ascend310P3", "--dim_range=S:1~8"]) == 3
    cap = capsys.readouterr()
    assert "a first run on zeros at S=1 fails" in cap.out and "Traceback" not in cap.err
