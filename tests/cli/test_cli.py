"""The `atcpy` and `atcpy-run` command lines: success lines, every mode, and a
clear one-line error with a distinct exit code for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.cli import main as atcpy
from runtime.cli import main as atcpy_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[Path, Path]:
    model = EXAMPLE / "tiny_cnn.onnx"
    if not model.exists():
        from examples.make_example import main as make

        make()
    return model, EXAMPLE / "tiny_cnn_input.npy"


@pytest.fixture(scope="module")
def compiled(example, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("om") / "tiny"
    assert atcpy([f"--model={example[0]}", "--framework=5", "--soc_version=Ascend310P3", f"--output={out}",
                  f"--report={out}.json"]) == 0
    return out.with_suffix(".om")


def test_compile_writes_om_and_report(compiled, capsys) -> None:
    assert compiled.is_file()
    report = json.loads(compiled.with_suffix(".json").read_text())
    for key in ("model", "soc_version", "precision_mode", "ops", "fusion", "tiling", "quantization", "memory",
                "estimated_latency_ms", "passes"):
        assert key in report
    assert report["ops"]["total"] > 0


def test_success_line(example, tmp_path, capsys) -> None:
    assert atcpy([f"--model={example[0]}", "--soc_version=Ascend310P3", f"--output={tmp_path / 'x'}"]) == 0
    assert "atcpy run success" in capsys.readouterr().out.strip().splitlines()[-1]


def test_compile_is_deterministic(example, tmp_path) -> None:
    for name in ("a", "b"):
        assert atcpy([f"--model={example[0]}", "--soc_version=Ascend310P3", f"--output={tmp_path / name}"]) == 0
    assert (tmp_path / "a.om").read_bytes() == (tmp_path / "b.om").read_bytes()


def test_run_matches_onnxruntime(example, compiled, tmp_path, capsys) -> None:
    import onnxruntime as ort

    assert atcpy_run([f"--model={compiled}", f"--input={example[1]}", f"--output={tmp_path}", "--loop=3"]) == 0
    assert "latency" in capsys.readouterr().out.lower()
    got = np.load(tmp_path / "probs.npy")
    want = ort.InferenceSession(str(example[0])).run(None, {"input": np.load(example[1])})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_mode_json_and_summary(compiled, tmp_path, capsys) -> None:
    assert atcpy(["--mode=1", f"--om={compiled}", f"--json={tmp_path / 'x.json'}"]) == 0
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc  # a readable document, not weight bytes
    assert atcpy(["--mode=6", f"--om={compiled}"]) == 0
    out = capsys.readouterr().out
    assert "Ascend310P3" in out and "arena" in out


def test_precheck_writes_nothing(example, tmp_path, capsys) -> None:
    assert atcpy(["--mode=3", f"--model={example[0]}", "--soc_version=Ascend310P3",
                  f"--output={tmp_path / 'x'}"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert "precheck success" in capsys.readouterr().out


def test_dump_ir_and_pass_timing(example, tmp_path, capsys) -> None:
    from ir import parse

    dump = tmp_path / "ir"
    assert atcpy([f"--model={example[0]}", "--soc_version=Ascend310P3", f"--output={tmp_path / 'x'}",
                  f"--dump_ir={dump}", "--pass_timing"]) == 0
    files = sorted(dump.glob("*.ir"))
    assert len(files) >= 2
    for f in files:
        parse(f.read_text(), synthesize=True)
    assert "canonicalize" in capsys.readouterr().out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error line on stderr"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_unknown_soc_lists_supported(example, tmp_path, capsys) -> None:
    assert atcpy([f"--model={example[0]}", "--soc_version=Ascend999", f"--output={tmp_path / 'x'}"]) == 2
    line = _error_line(capsys)
    assert "Ascend999" in line and "Ascend310P3" in line


def test_malformed_onnx(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model\xff\xff")
    assert atcpy([f"--model={bad}", "--soc_version=Ascend310P3", f"--output={tmp_path / 'x'}"]) == 3
    assert "bad.onnx" in _error_line(capsys) or "model" in _error_line(capsys)
    assert not (tmp_path / "x.om").exists()


def test_missing_flags_and_files_are_usage_errors(tmp_path, capsys) -> None:
    assert atcpy(["--soc_version=Ascend310P3"]) == 2
    assert "--model" in _error_line(capsys)
    assert atcpy([f"--model={tmp_path / 'nope.onnx'}", "--soc_version=Ascend310P3", "--output=x"]) == 2
    assert "nope.onnx" in _error_line(capsys)
    assert atcpy(["--bogus_flag=1"]) == 2


def _loop_model(path: Path) -> Path:
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Neg", ["v"], ["v_out"])],
                             "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v", TensorProto.FLOAT, [2])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2])])
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
        helper.make_node("Loop", ["n", "cond", "x"], ["v_final"], name="my_loop", body=body),
        helper.make_node("If", ["cond"], ["z"], name="my_if", then_branch=helper.make_graph(
            [helper.make_node("Identity", ["x"], ["t"])], "t", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])]),
            else_branch=helper.make_graph(
            [helper.make_node("Identity", ["x"], ["e"])], "e", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])),
    ]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                           helper.make_tensor_value_info("n", TensorProto.INT64, []),
                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_unsupported_ops_are_all_reported(tmp_path, capsys) -> None:
    model = _loop_model(tmp_path / "loop.onnx")
    assert atcpy([f"--model={model}", "--soc_version=Ascend310P3", f"--output={tmp_path / 'x'}"]) == 3
    err = capsys.readouterr().err
    assert "my_loop" in err and "my_if" in err and "Loop" in err and "If" in err and "17" in err
    assert not (tmp_path / "x.om").exists()
    assert atcpy(["--mode=3", f"--model={model}", "--soc_version=Ascend310P3"]) == 3
    out = capsys.readouterr().out
    assert "my_loop" in out and "my_if" in out


def test_truncated_and_bitflipped_om(compiled, example, tmp_path, capsys) -> None:
    data = compiled.read_bytes()
    trunc = tmp_path / "trunc.om"
    trunc.write_bytes(data[: len(data) // 2])
    assert atcpy_run([f"--model={trunc}", f"--input={example[1]}", f"--output={tmp_path}"]) == 4
    _error_line(capsys)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x10
    bad = tmp_path / "flip.om"
    bad.write_bytes(bytes(flipped))
    assert atcpy_run([f"--model={bad}", f"--input={example[1]}", f"--output={tmp_path}"]) == 4
    assert "checksum" in _error_line(capsys).lower()
    assert atcpy(["--mode=6", f"--om={trunc}"]) == 4


def test_wrong_input_shape_and_dtype(compiled, tmp_path, capsys) -> None:
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((1, 1, 9, 9), np.float32))
    assert atcpy_run([f"--model={compiled}", f"--input={wrong}", f"--output={tmp_path}"]) == 5
    line = _error_line(capsys)
    assert "input" in line and "9" in line and "8" in line
    np.save(wrong, np.zeros((1, 1, 8, 8), np.int32))
    assert atcpy_run([f"--model={compiled}", f"--input={wrong}", f"--output={tmp_path}"]) == 5
    assert "int32" in _error_line(capsys) or "i32" in capsys.readouterr().err


def test_mem_limit_exceeded_gives_sizes_and_exit_3(example, tmp_path, capsys) -> None:
    assert atcpy([f"--model={example[0]}", "--soc_version=Ascend310P3", f"--output={tmp_path / 'x'}",
                  "--mem_limit=64K"]) == 3
    line = _error_line(capsys)
    assert "bytes" in line and "65536" in line
    assert not (tmp_path / "x.om").exists()
    assert atcpy(["--mode=3", f"--model={example[0]}", "--soc_version=Ascend310P3", "--mem_limit=64K"]) == 3
    assert "65536" in capsys.readouterr().out


def test_precheck_prints_the_memory_plan(example, capsys) -> None:
    assert atcpy(["--mode=3", f"--model={example[0]}", "--soc_version=Ascend310P3"]) == 0
    out = capsys.readouterr().out
    assert "arena" in out and "lower bound" in out and "naive" in out and "weights" in out


def test_profile_shows_measured_beside_estimate(example, compiled, tmp_path, capsys) -> None:
    assert atcpy_run([f"--model={compiled}", f"--input={example[1]}", f"--output={tmp_path}", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "measured ms" in out and "est. ms (Ascend310P3)" in out
    assert (tmp_path / "profile.json").is_file()
