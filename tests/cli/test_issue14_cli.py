"""Issue 14 on the command line: ``--mode=3`` runs what a compile and a first run
would, and ``--input_shape`` takes zero-size dims (the prompt step's empty past)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.cli import main as atcpy
from runtime.session import Session

F = TensorProto.FLOAT
SOC = "--soc_version=Ascend310P3"


def _save(tmp_path: Path, nodes, inputs: dict[str, list], inits: dict[str, np.ndarray], outputs: list[str],
          opset: int = 17) -> Path:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs.items()],
                          [helper.make_tensor_value_info(o, F, None) for o in outputs],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _errors(capsys) -> tuple[str, str]:
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return cap.out, cap.err


# -- (d) --mode=3 fails for a model whose first run fails ---------------------------------------
def test_precheck_reports_a_model_whose_first_run_fails(tmp_path, capsys):
    """A linear Upsample compiles (it runs on the AICPU through onnx.reference), but that
    kernel only does nearest: the first run fails.  --mode=3 used to say "precheck success"."""
    model = _save(tmp_path, [helper.make_node("Relu", ["x"], ["r"]),
                             helper.make_node("Upsample", ["r", "s"], ["y"], mode="linear")],
                  {"x": [1, 2, 4, 4]}, {"s": np.array([1, 1, 2, 2], np.float32)}, ["y"], opset=9)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert atcpy(["--mode=3", f"--model={model}", SOC, f"--output={out_dir / 'x'}"]) == 3
    out, err = _errors(capsys)
    assert "first run" in out and "Upsample" in out and "precheck failed" in err
    assert list(out_dir.iterdir()) == []
    # the compile itself succeeds; the .om then fails on its first run, as --mode=3 said
    assert atcpy([f"--model={model}", SOC, f"--output={out_dir / 'x'}"]) == 0
    with pytest.raises(Exception, match="Upsample"):
        Session(out_dir / "x.om").run(None, {"x": np.zeros((1, 2, 4, 4), np.float32)})


def test_precheck_success_still_writes_nothing(tmp_path, capsys):
    model = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], {"x": ["N", 4]}, {}, ["y"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert atcpy(["--mode=3", f"--model={model}", SOC, f"--output={out_dir / 'x'}"]) == 0
    out, _ = _errors(capsys)
    assert "precheck success" in out and list(out_dir.iterdir()) == []


# -- (e) zero-size dims ----------------------------------------------------------------------------
def _kv_model(tmp_path: Path) -> Path:
    """One attention step over a KV cache: present = Concat(past, new) on the sequence axis."""
    nodes = [helper.make_node("Mul", ["past", "half"], ["past2"]),  # a zero-size intermediate too
             helper.make_node("Concat", ["past2", "new"], ["present"], axis=2),
             helper.make_node("Transpose", ["present"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "present"], ["y"])]
    return _save(tmp_path, nodes, {"past": [1, 2, "P", 16], "new": [1, 2, 8, 16], "q": [1, 2, 8, 16]},
                 {"half": np.array(0.5, np.float32)}, ["y", "present"])


def test_input_shape_accepts_a_zero_dim_and_the_model_runs(tmp_path, capsys):
    model = _kv_model(tmp_path)
    out = tmp_path / "kv"
    assert atcpy([f"--model={model}", SOC, '--input_shape=past:1,2,0,16', f"--output={out}"]) == 0
    _errors(capsys)
    rng = np.random.default_rng(0)
    feeds = {"past": np.zeros((1, 2, 0, 16), np.float32),
             "new": rng.standard_normal((1, 2, 8, 16)).astype(np.float32),
             "q": rng.standard_normal((1, 2, 8, 16)).astype(np.float32)}
    sess = Session(out.with_suffix(".om"))
    assert sess.get_inputs()[0].shape == [1, 2, 0, 16]
    got = sess.run(None, feeds)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert atcpy(["--mode=3", f"--model={model}", SOC, '--input_shape=past:1,2,0,16']) == 0


def test_input_shape_still_rejects_negative_sizes(tmp_path, capsys):
    model = _kv_model(tmp_path)
    assert atcpy([f"--model={model}", SOC, '--input_shape=past:1,2,-2,16', f"--output={tmp_path / 'x'}"]) == 2
    _, err = _errors(capsys)
    assert "usage error" in err and "past" in err and "-2" in err
    assert not (tmp_path / "x.om").exists()
