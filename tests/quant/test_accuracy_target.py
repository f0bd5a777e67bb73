"""``--accuracy_target``: INT8 layers go back to float, lowest SNR first, until
the output cosine on the held-back calibration samples reaches the target.

On examples/tiny_cnn (4 quantizable layers) with 40 seeded random-normal
samples (32 calibrate, 8 held back) plain INT8 with percentile clipping reaches a
cosine of about 0.9982: a target of 0.9995 needs layers in float, 0.9 none, and 1.0000001
more than all-float gives (cosine is at most 1, reached exactly when every
layer is float: the loop's reference is the float compile itself)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main as atcpy
from runtime.om import load_executable

MODEL = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.onnx"
TARGET = 0.9995  # between plain INT8 (about 0.998) and all-float (1.0)


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("target") / "calib.npz"
    np.savez(path, input=np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32))
    return path


def _run(calib: Path, out: Path, *flags: str) -> tuple[int, dict]:
    code = atcpy([f"--model={MODEL}", "--soc_version=Ascend310P3", f"--output={out}", f"--report={out}.json",
                  f"--calibration_data={calib}", *flags])
    path = Path(f"{out}.json")
    return code, json.loads(path.read_text()) if path.exists() else {}


def _int8(calib: Path, out: Path, *flags: str) -> tuple[int, dict]:
    # percentile clipping: with the default MSE search plain INT8 already reaches ~0.9998 here
    return _run(calib, out, "--precision_mode=allow_quantize", "--calibration_method=percentile", *flags)


def test_the_loop_reaches_a_target_plain_int8_misses(calib, tmp_path, capsys) -> None:
    code, plain = _int8(calib, tmp_path / "plain")
    assert code == 0
    code, rep = _int8(calib, tmp_path / "t", f"--accuracy_target={TARGET}")
    assert code == 0
    t = rep["accuracy_target"]
    first = t["history"][0]
    assert first["rolled_back"] == 0 and first["cosine"] < TARGET  # plain INT8 misses it
    assert t["met"] and t["cosine"] >= TARGET and t["target"] == TARGET
    assert 1 <= t["rolled_back"] < first["quantized_layers"]  # some layers, not all
    assert t["rolled_back"] == len(t["kept_in_float"]) and t["iterations"] == len(t["history"]) >= 2
    assert t["held_back"] == 8 and t["calibration_samples"] == 32
    # the shipped .om is the compile with those layers in float
    assert rep["quantization"]["quantized_ops"] == plain["quantization"]["quantized_ops"] - t["rolled_back"]
    out = capsys.readouterr().out
    assert f"accuracy target {TARGET}: cosine" in out and f"{t['rolled_back']} layer(s) in float" in out
    stored = load_executable(str(tmp_path / "t.om")).report["accuracy_target"]
    assert "seconds" not in stored and stored["kept_in_float"] == t["kept_in_float"]  # the .om stays reproducible


def test_kept_layers_are_named_in_the_summary(calib, tmp_path, capsys) -> None:
    code, rep = _int8(calib, tmp_path / "t", f"--accuracy_target={TARGET}")
    assert code == 0
    capsys.readouterr()
    assert atcpy(["--mode=6", f"--om={tmp_path / 't.om'}"]) == 0
    text = capsys.readouterr().out
    assert f"accuracy target  {TARGET}: output cosine" in text
    assert "kept in float  " + ", ".join(rep["accuracy_target"]["kept_in_float"]) in text


def test_a_target_plain_int8_meets_rolls_back_nothing(calib, tmp_path) -> None:
    code, rep = _int8(calib, tmp_path / "t", "--accuracy_target=0.9")
    assert code == 0
    t = rep["accuracy_target"]
    assert (t["rolled_back"], t["kept_in_float"], t["iterations"]) == (0, [], 1) and t["cosine"] >= 0.9


def test_a_target_above_what_all_float_reaches_exits_3_with_the_report(calib, tmp_path, capsys) -> None:
    code, rep = _int8(calib, tmp_path / "t", "--accuracy_target=1.0000001")
    assert code == 3
    assert not (tmp_path / "t.om").exists()
    t = rep["accuracy_target"]
    assert rep["status"] == "failed" and not t["met"]
    assert t["cosine"] == 1.0  # all float: exactly the reference
    assert t["rolled_back"] == t["history"][0]["quantized_layers"] == t["history"][-1]["rolled_back"]
    err = capsys.readouterr().err
    assert "accuracy target not met" in err and "best output cosine reached is 1.000000" in err


def test_a_target_of_one_is_met_by_all_float(calib, tmp_path) -> None:
    code, rep = _int8(calib, tmp_path / "t", "--accuracy_target=1")
    assert code == 0
    t = rep["accuracy_target"]
    assert t["cosine"] == 1.0 and rep["quantization"]["quantized_ops"] == 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--accuracy_target=0.99"], "needs --precision_mode=allow_quantize"),
    (["--precision_mode=force_fp16", "--accuracy_target=0.99"], "needs --precision_mode=allow_quantize"),
    (["--precision_mode=allow_quantize", "--accuracy_target=0"], "must be a cosine above 0"),
    (["--precision_mode=allow_quantize", "--accuracy_target=-0.5"], "must be a cosine above 0"),
    (["--precision_mode=allow_quantize", "--accuracy_target=nan"], "must be a cosine above 0"),
    (["--precision_mode=allow_quantize", "--accuracy_target=high"], "--accuracy_target: invalid float value"),
])
def test_usage_errors(calib, tmp_path, capsys, flags, message) -> None:
    code, _ = _run(calib, tmp_path / "t", *flags)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.om").exists()


def test_without_calibration_data_is_a_usage_error(tmp_path, capsys) -> None:
    code = atcpy([f"--model={MODEL}", "--soc_version=Ascend310P3", f"--output={tmp_path / 't'}",
                  "--quant_type=W8A8", "--accuracy_target=0.99"])
    assert code == 2 and "--calibration_data" in capsys.readouterr().err


def test_ranges_are_measured_once_across_iterations(calib, monkeypatch) -> None:
    """Each iteration quantizes a clone of one graph: the calibration sweep runs once."""
    import compiler.calibration as cal
    from compiler.accuracy import reach_accuracy_target

    calls = []
    real = cal.calibrate
    monkeypatch.setattr(cal, "_LAST", {})
    monkeypatch.setattr(cal, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    t = reach_accuracy_target(str(MODEL), {"calibration_data": str(calib), "calibration_method": "percentile",
                                           "progress": False}, TARGET)
    assert t["met"] and t["iterations"] >= 2 and len(calls) == 1


def test_step_rolls_back_a_tenth_while_far_from_the_target() -> None:
    from compiler.accuracy import _step

    assert _step(0.90, 0.99, 57) == math.ceil(57 / 10)  # error 0.1 > 4 x 0.01
    assert _step(0.97, 0.99, 57) == 1
    assert _step(0.5, 0.99, 3) == 1


def test_layers_are_ranked_by_the_noise_they_add(calib) -> None:
    """A layer's SNR counts the error of every layer before it; ``added_noise`` is
    its relative noise less that of the nearest quantized layers upstream, so the
    first layer (nothing quantized before it) adds all of its own."""
    from compiler.accuracy import build_accuracy_report

    rep = build_accuracy_report(str(MODEL), {"calibration_data": str(calib), "progress": False})
    layers = rep["layers"]
    own = [10 ** (-r["snr_db"] / 10) for r in layers]
    assert len(layers) == 4 and all(0 <= r["added_noise"] <= n + 1e-15 for r, n in zip(layers, own))
    assert any(r["added_noise"] == pytest.approx(n) for r, n in zip(layers, own))  # the first layer
    assert any(r["added_noise"] < 0.5 * n for r, n in zip(layers, own))  # a deeper one inherits most of its noise


def test_the_python_api_runs_the_loop_through_compile_to_target(calib) -> None:
    """compiler.accuracy imports the driver, so the loop is `compile_to_target`'s;
    `compile_model` given the option alone says where to go."""
    from compiler.accuracy import compile_to_target
    from compiler.driver import CompileOptions, compile_model
    from ir.errors import UsageError

    with pytest.raises(UsageError, match="compile_to_target"):
        compile_model(str(MODEL), precision_mode="allow_quantize", calibration_data=str(calib),
                      accuracy_target=TARGET, progress=False)
    exe = compile_to_target(str(MODEL), CompileOptions(precision_mode="allow_quantize", calibration_data=str(calib),
                                                       calibration_method="percentile", accuracy_target=TARGET,
                                                       progress=False))
    t = exe.full_report["accuracy_target"]
    assert t["met"] and t["rolled_back"] >= 1
