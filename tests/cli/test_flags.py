"""Every `atcpy` flag reaches the code that reads it: one test a flag, each of
which would fail if the flag were parsed and then dropped (as ``--op_engine``
once was).  `FLAG_TESTS` names the test of each flag; a new flag without one
fails `test_every_flag_has_a_test`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.cli import build_parser
from compiler.cli import main as atcpy
from compiler.driver import CompileOptions
from passes.options import PassOptions
from runtime import Session
from runtime.om import load_executable

EXAMPLE = Path(__file__).resolve().parents[2] / "examples"

# flag -> "module::test" (test_cli.py covers the flags it already exercised)
FLAG_TESTS = {
    "--mode": "test_cli::test_mode_json_and_summary",
    "--model": "test_cli::test_missing_flags_and_files_are_usage_errors",
    "--framework": "test_flags::test_framework",
    "--output": "test_flags::test_output",
    "--soc_version": "test_flags::test_soc_version",
    "--input_shape": "test_flags::test_input_shape",
    "--input_format": "test_flags::test_input_format_nhwc_matches_onnxruntime",
    "--dim_range": "test_flags::test_dim_range_and_input_shape_range",
    "--input_shape_range": "test_flags::test_dim_range_and_input_shape_range",
    "--dynamic_batch_size": "test_flags::test_gear_flags",
    "--dynamic_image_size": "test_flags::test_gear_flags",
    "--dynamic_dims": "test_flags::test_gear_flags",
    "--out_nodes": "test_flags::test_out_nodes",
    "--precision_mode": "test_flags::test_precision_mode",
    "--calibration_data": "test_flags::test_calibration_data",
    "--calibration_method": "test_flags::test_calibration_method_and_percentile",
    "--calibration_percentile": "test_flags::test_calibration_method_and_percentile",
    "--keep_dtype": "test_flags::test_keep_dtype",
    "--accuracy_report": "test_flags::test_accuracy_report",
    "--accuracy_target": "test_flags::test_accuracy_target",
    "--op_select_implmode": "test_flags::test_op_select_implmode",
    "--op_engine": "test_flags::test_op_engine",
    "--mem_limit": "test_cli::test_mem_limit_exceeded_gives_sizes_and_exit_3",
    "--passes": "test_flags::test_passes",
    "--log": "test_flags::test_log",
    "--dump_ir": "test_cli::test_dump_ir_and_pass_timing",
    "--pass_timing": "test_cli::test_dump_ir_and_pass_timing",
    "--verify_each": "test_flags::test_verify_each",
    "--report": "test_cli::test_compile_writes_om_and_report",
    "--quant_type": "test_flags::test_quant_type_and_weight_flags",
    "--weight_group_size": "test_flags::test_quant_type_and_weight_flags",
    "--weight_symmetric": "test_flags::test_quant_type_and_weight_flags",
    "--weight_rounding": "test_flags::test_weight_rounding",
    "--kv_cache_dtype": "test_flags::test_kv_cache_dtype_flags",
    "--compress_kv_cache": "test_flags::test_kv_cache_dtype_flags",
    "--om": "test_cli::test_mode_json_and_summary",
    "--json": "test_cli::test_mode_json_and_summary",
    "--arena_svg": "test_arena_svg::test_every_arena_tensor_is_a_box_at_its_offset_and_live_range",
    "--onnx": "test_om_to_onnx::test_one_annotated_node_per_step_and_the_checker_passes",
    "--onnx_weights": "test_om_to_onnx::test_weights_read_from_the_om_embedded_or_shape_only",
    "--version": "test_newcomer::test_version",
}


def test_every_flag_has_a_test() -> None:
    import importlib

    flags = {s for a in build_parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    assert flags == set(FLAG_TESTS)
    for where in FLAG_TESTS.values():
        module, _, name = where.partition("::")
        assert callable(getattr(importlib.import_module(f"tests.cli.{module}"), name, None)), where


def test_every_pass_option_is_a_compile_option() -> None:
    # what a pass reads can be set by a compile (calibrator/calibration: built by the driver, or given by the API)
    missing = set(PassOptions.names()) - set(CompileOptions.field_names()) - {"calibration", "calibrator"}
    assert not missing


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, input=np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32))
    return path


def _compile(model: Path, out: Path, *flags: str) -> tuple[int, dict]:
    code = atcpy([f"--model={model}", "--framework=5", "--soc_version=Ascend310P3", f"--output={out}",
                  f"--report={out}.json", *flags])
    report = json.loads(Path(f"{out}.json").read_text()) if code == 0 else {}
    return code, report


def _quant(model: Path, calib: Path, out: Path, *flags: str) -> dict:
    code, report = _compile(model, out, "--precision_mode=allow_quantize", f"--calibration_data={calib}", *flags)
    assert code == 0
    return report


def _conv_model(path: Path) -> Path:
    """x[N, 3, 5, 7] -> Conv(3->4, 3x3, pad 1) -> Relu: C, H and W all differ, so a wrong
    transposition cannot go unnoticed."""
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 5, 7])],
                          [onnx.numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# -- one test a flag -------------------------------------------------------------------------------
def test_framework(model, tmp_path, capsys) -> None:
    assert atcpy([f"--model={model}", "--framework=3", "--soc_version=Ascend310P3", f"--output={tmp_path / 'x'}"]) == 2
    assert "--framework=3" in capsys.readouterr().err


def test_output(model, tmp_path) -> None:
    assert _compile(model, tmp_path / "sub_name")[0] == 0
    assert (tmp_path / "sub_name.om").is_file()


def test_soc_version(model, tmp_path) -> None:
    _, report = _compile(model, tmp_path / "a")
    code = atcpy([f"--model={model}", "--soc_version=Ascend910B", f"--output={tmp_path / 'b'}",
                  f"--report={tmp_path / 'b.json'}"])
    assert code == 0
    assert report["soc_version"] == "Ascend310P3"
    assert json.loads((tmp_path / "b.json").read_text())["soc_version"] == "Ascend910B"
    assert load_executable(str(tmp_path / "b.om")).to_json()["soc_version"] == "Ascend910B"


def test_input_shape(tmp_path) -> None:
    m = _conv_model(tmp_path / "conv.onnx")
    assert _compile(m, tmp_path / "x", "--input_shape=x:2,3,5,7")[0] == 0
    sess = Session(str(tmp_path / "x.om"))
    y = sess.run(None, {"x": np.zeros((2, 3, 5, 7), np.float32)})[0]
    assert y.shape == (2, 4, 5, 7)
    with pytest.raises(Exception, match="shape"):
        sess.run(None, {"x": np.zeros((3, 3, 5, 7), np.float32)})


def test_input_format_nhwc_matches_onnxruntime(tmp_path, capsys) -> None:
    import onnxruntime as ort

    m = _conv_model(tmp_path / "conv.onnx")
    # --input_shape is given as fed: NHWC
    code, report = _compile(m, tmp_path / "nhwc", "--input_format=NHWC", "--input_shape=x:2,5,7,3")
    assert code == 0
    assert report["input_format"] == {"format": "NHWC", "inputs": ["x"]}
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 7)).astype(np.float32)
    want = ort.InferenceSession(str(m)).run(None, {"x": x})[0]
    sess = Session(str(tmp_path / "nhwc.om"))
    got = sess.run(None, {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="shape"):
        sess.run(None, {"x": x})  # NCHW is no longer what the model takes
    # one Transpose at the input, and nothing else changed
    nhwc_steps = [s["kernel"] for s in load_executable(str(tmp_path / "nhwc.om")).to_json()["program"]["steps"]]
    assert _compile(m, tmp_path / "nchw", "--input_shape=x:2,3,5,7")[0] == 0
    nchw_steps = [s["kernel"] for s in load_executable(str(tmp_path / "nchw.om")).to_json()["program"]["steps"]]
    assert nhwc_steps.count("Transpose") == nchw_steps.count("Transpose") + 1
    # ND (no layout) and NCHW (the default) change nothing
    for fmt in ("NCHW", "ND"):
        assert _compile(m, tmp_path / fmt, f"--input_format={fmt}", "--input_shape=x:2,3,5,7")[0] == 0
        assert (tmp_path / f"{fmt}.om").read_bytes() == (tmp_path / "nchw.om").read_bytes()
    assert _compile(m, tmp_path / "bad", "--input_format=NC1HWC0")[0] == 2
    assert "input_format" in capsys.readouterr().err


def test_input_format_nhwc_needs_a_4d_input(tmp_path, capsys) -> None:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), m)
    assert _compile(m, tmp_path / "x", "--input_format=NHWC")[0] == 2
    assert "no 4-D input" in capsys.readouterr().err


def test_out_nodes(model, tmp_path) -> None:
    assert _compile(model, tmp_path / "x", "--out_nodes=logits")[0] == 0
    outs = Session(str(tmp_path / "x.om")).run(None, {"input": np.load(EXAMPLE / "tiny_cnn_input.npy")})
    assert len(outs) == 1 and not np.allclose(outs[0].sum(), 1.0)  # logits, not the softmax


def test_precision_mode(model, tmp_path) -> None:
    _, fp32 = _compile(model, tmp_path / "a")
    code, fp16 = _compile(model, tmp_path / "b", "--precision_mode=force_fp16")
    assert code == 0 and fp16["precision_mode"] == "force_fp16"
    assert "cast-precision" in [p["name"] for p in fp16["passes"]]
    assert "cast-precision" not in [p["name"] for p in fp32["passes"]]
    assert fp16["memory"]["weights_bytes"] < fp32["memory"]["weights_bytes"]  # the pass read the mode


def test_calibration_data(model, calib, tmp_path) -> None:
    report = _quant(model, calib, tmp_path / "q")
    assert report["quantization"]["samples"] == 8 and report["quantization"]["quantized_ops"] > 0


def test_calibration_method_and_percentile(model, calib, tmp_path) -> None:
    runs = {"pct": [], "max": ["--calibration_method=max"], "p50": ["--calibration_percentile=50"]}
    oms = {}
    for name, flags in runs.items():
        report = _quant(model, calib, tmp_path / name, "--calibration_method=percentile", *flags)
        oms[name] = (tmp_path / f"{name}.om").read_bytes()
        assert report["quantization"]["calibration"] == ("max" if name == "max" else "percentile")
    # the ranges (so the int8 weights, biases and scales) depend on both flags
    assert len(set(oms.values())) == 3


def test_keep_dtype(model, calib, tmp_path) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text("OpType::Conv\n")
    all_q = _quant(model, calib, tmp_path / "a")["quantization"]["quantized_ops"]
    kept = _quant(model, calib, tmp_path / "b", f"--keep_dtype={keep}")["quantization"]["quantized_ops"]
    assert kept == all_q - 2  # tiny_cnn's two convolutions stay float


def test_accuracy_report(model, calib, tmp_path) -> None:
    _quant(model, calib, tmp_path / "q", f"--accuracy_report={tmp_path / 'acc.json'}")
    acc = json.loads((tmp_path / "acc.json").read_text())
    assert acc["quantized_layers"] > 0 and acc["outputs"]


def test_accuracy_target(model, calib, tmp_path) -> None:
    """The target reaches the loop (tests/quant/test_accuracy_target.py tests the loop itself)."""
    report = _quant(model, calib, tmp_path / "q", "--accuracy_target=1")
    t = report["accuracy_target"]
    assert t["target"] == 1.0 and t["met"] and t["cosine"] == 1.0 and t["rolled_back"] > 0


def test_op_select_implmode(model, tmp_path) -> None:
    _, perf = _compile(model, tmp_path / "a")
    code, prec = _compile(model, tmp_path / "b", "--op_select_implmode=high_precision")
    assert code == 0
    # Ascend310P3's Cube has no f32: high_performance runs f32 Cube ops as f16, high_precision does not
    assert perf["ops"]["by_engine"]["cube"] > 0 and prec["ops"]["by_engine"]["cube"] == 0


def test_op_engine(model, tmp_path, capsys) -> None:
    _, before = _compile(model, tmp_path / "a")
    assert not any(f["kind"] == "Softmax" for f in before["fallbacks"])
    code, report = _compile(model, tmp_path / "b", "--op_engine=Softmax=aicpu")
    assert code == 0
    assert {"kind": "Softmax", "op": "probs", "reason": "Softmax: override -> aicpu"} in report["fallbacks"]
    assert report["ops"]["by_engine"]["aicpu"] == before["ops"]["by_engine"]["aicpu"] + 1
    # a malformed override is the user's to fix: a usage error before anything is compiled
    assert _compile(model, tmp_path / "c", "--op_engine=Softmax=gpu")[0] == 2
    err = capsys.readouterr().err
    assert "--op_engine" in err and "gpu" in err
    assert not (tmp_path / "c.om").exists()


def test_passes(model, tmp_path) -> None:
    code, report = _compile(model, tmp_path / "x", "--passes=canonicalize,place,assign-buffers")
    assert code == 0
    assert [p["name"] for p in report["passes"]] == ["canonicalize", "place", "assign-buffers"]
    assert not report["fusion"]


def test_log(model, tmp_path, caplog) -> None:
    assert _compile(model, tmp_path / "a")[0] == 0
    assert not [r for r in caplog.records if r.levelname == "INFO"]
    assert _compile(model, tmp_path / "b", "--log=info")[0] == 0
    assert any("soc_version" in r.getMessage() for r in caplog.records if r.levelname == "INFO")  # the summary


def test_verify_each(model, tmp_path, monkeypatch) -> None:
    from passes import manager

    calls = []
    real = manager.verify
    monkeypatch.setattr(manager, "verify", lambda g: calls.append(1) or real(g))
    assert _compile(model, tmp_path / "a")[0] == 0
    assert not calls
    assert _compile(model, tmp_path / "b", "--verify_each")[0] == 0
    assert len(calls) >= 2  # the input and after each pass


def _symbolic_model(path: Path) -> Path:
    """x [N, S, 8] -> Relu: two named dims."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "S", 8])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_dim_range_and_input_shape_range(tmp_path, capsys) -> None:
    m = _symbolic_model(tmp_path / "sym.onnx")
    code, report = _compile(m, tmp_path / "a", "--dim_range=N:1~2;S:1~16")
    assert code == 0 and report["dims"] == {"N": [1, 2], "S": [1, 16]}
    assert report["memory"]["arena_bytes"] >= 2 * 16 * 8 * 4  # planned at the bound
    code, report = _compile(m, tmp_path / "b", "--input_shape_range=x:[1~2,1~16,8]")
    assert code == 0 and report["dims"] == {"N": [1, 2], "S": [1, 16]}
    sess = Session(str(tmp_path / "b.om"))
    x = np.random.default_rng(0).standard_normal((2, 9, 8)).astype(np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.maximum(x, 0))
    capsys.readouterr()
    assert _compile(m, tmp_path / "c", "--dim_range=T:1~4")[0] == 2
    assert "no input of the model has a dim named 'T'" in capsys.readouterr().err
    assert _compile(m, tmp_path / "d", "--dim_range=S:9~4")[0] == 2
    assert "empty range" in capsys.readouterr().err


def test_gear_flags(tmp_path, capsys) -> None:
    m = _symbolic_model(tmp_path / "sym.onnx")
    for flag, shape, spec, gears in [
        ("--dynamic_batch_size", "x:-1,4,8", "1,2", [[1], [2]]),
        ("--dynamic_image_size", "x:1,-1,-1", "2,8;4,8", [[2, 8], [4, 8]]),
        ("--dynamic_dims", "x:-1,-1,8", "1,3;2,5", [[1, 3], [2, 5]]),
    ]:
        code, report = _compile(m, tmp_path / flag[2:], f"--input_shape={shape}", f"{flag}={spec}")
        assert code == 0 and report["gears"]["values"] == gears, flag
    capsys.readouterr()
    assert _compile(m, tmp_path / "bad", "--input_shape=x:-1,4,8")[0] == 2
    assert "-1 needs one of" in capsys.readouterr().err


def _nbits_steps(om: Path) -> list[dict]:
    return [s for s in load_executable(str(om)).to_json()["program"]["steps"] if s["kernel"] == "quant.matmul_nbits"]


def test_quant_type_and_weight_flags(model, calib, tmp_path) -> None:
    """W8A16 / W4A16 turn tiny_cnn's classifier into quant.matmul_nbits with the bits, group
    size and zero points asked for; W8A8 is the calibrated INT8 path."""
    runs = {"w8": (["--quant_type=W8A16"], 8, 3), "w4g16": (["--quant_type=W4A16", "--weight_group_size=16"], 4, 3),
            "w4asym": (["--quant_type=W4A16", "--weight_symmetric=false"], 4, 4)}
    for name, (flags, bits, operands) in runs.items():
        code, _ = _compile(model, tmp_path / name, *flags)
        steps = _nbits_steps(tmp_path / f"{name}.om")
        assert code == 0 and steps, name
        assert {s["attrs"]["bits"] for s in steps} == {bits} and {len(s["inputs"]) for s in steps} == {operands}
    assert {s["attrs"]["group_size"] for s in _nbits_steps(tmp_path / "w4g16.om")} <= {16}
    code, report = _compile(model, tmp_path / "w8a8", "--quant_type=W8A8", f"--calibration_data={calib}")
    assert code == 0 and report["precision_mode"] == "allow_quantize" and report["quantization"]["quantized_ops"] > 0
    assert not _nbits_steps(tmp_path / "w8a8.om")


def test_weight_rounding(model, calib, tmp_path, capsys) -> None:
    assert _compile(model, tmp_path / "x", "--quant_type=W4A16", "--weight_rounding=gptq")[0] == 2
    assert "--calibration_data" in capsys.readouterr().err
    rtn = _compile(model, tmp_path / "rtn", "--quant_type=W4A16")[0]
    gptq = _compile(model, tmp_path / "gptq", "--quant_type=W4A16", "--weight_rounding=gptq",
                    f"--calibration_data={calib}")[0]
    assert rtn == gptq == 0
    assert (tmp_path / "rtn.om").read_bytes() != (tmp_path / "gptq.om").read_bytes()  # other codes


def test_kv_cache_dtype_flags() -> None:
    from compiler.cli import _compile_options

    parser = build_parser()
    for flags, want in (([], None), (["--kv_cache_dtype=fp16"], "fp16"), (["--kv_cache_dtype=int8"], "int8"),
                        (["--compress_kv_cache=true"], "int8"), (["--compress_kv_cache=false", "--kv_cache_dtype=fp16"], "fp16")):
        args = parser.parse_args(["--model=" + str(EXAMPLE / "tiny_cnn.onnx"), "--soc_version=Ascend310P3", *flags])
        opts = _compile_options(args)
        assert opts.kv_cache_dtype == want and opts.pass_options().kv_cache_dtype == want, flags
