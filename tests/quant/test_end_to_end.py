"""The quantize pass through the whole compiler and runtime on a real (small)
model: weights stored as int8, accuracy kept, calibration methods compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.driver import compile_model
from ir.errors import UsageError
from runtime import Session

BATCH = 100


def _predict(exe, x: np.ndarray) -> np.ndarray:
    s = Session(exe)
    return np.concatenate([s.run(None, {"X": x[i:i + BATCH]})[1] for i in range(0, len(x), BATCH)])


def _compile(model: Path, calib: Path | None, **kw):
    return compile_model(str(model), precision_mode=kw.pop("precision_mode", "allow_quantize"),
                         calibration_data=None if calib is None else str(calib),
                         input_shapes={"X": [BATCH, 64]}, **kw)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def held_out(digits):
    x, y = digits
    return x[1300:1700], y[1300:1700]


@pytest.fixture(scope="module")
def calib_npz(digits, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(p, X=digits[0][:300])
    return p


@pytest.fixture(scope="module")
def fp32(mlp_onnx, held_out):
    return _predict(_compile(mlp_onnx, None, precision_mode="force_fp32"), held_out[0])


def test_int8_mlp_keeps_accuracy_and_shrinks_weights(mlp_onnx, calib_npz, held_out, fp32) -> None:
    exe = _compile(mlp_onnx, calib_npz, calibration_method="percentile")
    rep = exe.report
    assert rep["quantization"]["quantized_ops"] == 3
    assert rep["quantization"]["samples"] == 300
    float_exe = _compile(mlp_onnx, None, precision_mode="force_fp32")
    ratio = float_exe.report["memory"]["weights_bytes"] / rep["memory"]["weights_bytes"]
    assert ratio > 3.0  # int8 weights + small f32 scale / int32 bias vectors
    kernels = [s["kernel"] for s in exe.program["steps"]]
    assert kernels.count("quant.matmul") == 3 and "MatMul" not in kernels
    q = _predict(exe, held_out[0])
    y = held_out[1]
    assert abs((q.argmax(1) == y).mean() - (fp32.argmax(1) == y).mean()) <= 0.01
    assert _cos(q, fp32) >= 0.999


@pytest.mark.parametrize("method", ["max", "percentile", "entropy"])
def test_every_calibration_method_gives_a_close_model(mlp_onnx, calib_npz, held_out, fp32, method) -> None:
    q = _predict(_compile(mlp_onnx, calib_npz, calibration_method=method), held_out[0])
    assert _cos(q, fp32) >= 0.99


def test_percentile_survives_outliers_that_ruin_max(mlp_onnx, digits, held_out, fp32, tmp_path) -> None:
    """0.1% of the calibration values scaled x100: `max` stretches the input scale
    100-fold (most pixels quantize to 0 or 1), the 99.9th percentile does not."""
    x = digits[0][:300].copy()
    rng = np.random.default_rng(0)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, flat.size // 1000, replace=False)
    flat[idx] = flat[idx] * 100 + 50  # x100 (and off zero, so blank pixels become outliers too)
    p = tmp_path / "outliers.npz"
    np.savez(p, X=x)
    y = held_out[1]
    acc_fp32 = (fp32.argmax(1) == y).mean()
    acc = {m: (_predict(_compile(mlp_onnx, p, calibration_method=m), held_out[0]).argmax(1) == y).mean()
           for m in ("max", "percentile")}
    assert acc["percentile"] >= acc_fp32 - 0.01
    assert acc["max"] < acc_fp32 - 0.05
    assert acc["percentile"] > acc["max"]


def test_keep_dtype_leaves_named_layers_in_float(mlp_onnx, calib_npz) -> None:
    exe = _compile(mlp_onnx, calib_npz, keep_dtype="OpType::MatMul")
    assert exe.report["quantization"]["quantized_ops"] == 0
    exe = _compile(mlp_onnx, calib_npz, keep_dtype="MatMul2")  # the ONNX node name of the last layer
    assert exe.report["quantization"]["quantized_ops"] == 2


def test_allow_quantize_without_calibration_data_is_a_usage_error(mlp_onnx) -> None:
    with pytest.raises(UsageError, match="calibration_data"):
        _compile(mlp_onnx, None)


def test_calibration_data_for_the_wrong_input_names_the_input(mlp_onnx, tmp_path) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, a=np.zeros((4, 64), np.float32), b=np.zeros((4, 64), np.float32))
    with pytest.raises(UsageError, match="no array for input"):
        _compile(mlp_onnx, p)
    np.savez(p, X=np.zeros((4, 63), np.float32))
    with pytest.raises(UsageError, match="dimension 1 is 63, not 64"):
        _compile(mlp_onnx, p)


def test_directory_of_npy_and_bin_files(mlp_onnx, digits, tmp_path, calib_npz) -> None:
    d = tmp_path / "calib"
    d.mkdir()
    x = digits[0][:300]
    np.save(d / "a.npy", x[:150])
    x[150:].tofile(d / "b.bin")
    a = _compile(mlp_onnx, d, calibration_method="max")
    b = _compile(mlp_onnx, calib_npz, calibration_method="max")
    assert a.report["quantization"]["samples"] == 300
    # the same samples give the same ranges: the same program and weights
    assert a.program == b.program
    assert a.weights.keys() == b.weights.keys()
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)


def test_accuracy_report_ranks_layers(mlp_onnx, calib_npz, tmp_path) -> None:
    from compiler.accuracy import write_accuracy_report

    path = tmp_path / "acc.json"
    rep = write_accuracy_report(str(mlp_onnx), None, {"calibration_data": str(calib_npz),
                                                      "input_shapes": {"X": [BATCH, 64]}}, path)
    assert path.read_text().startswith("{")
    assert rep["outputs"]["probabilities"]["cosine"] > 0.999
    assert rep["outputs"]["label"]["agreement"] > 0.95
    snrs = [layer["snr_db"] for layer in rep["layers"]]
    assert len(snrs) == 3 and snrs == sorted(snrs) and min(snrs) > 20


def test_accuracy_report_calibrates_without_the_samples_it_evaluates_on(mlp_onnx, calib_npz, tmp_path,
                                                                       monkeypatch) -> None:
    """The report's INT8 model is calibrated on the calibration samples minus the
    held-back ones (a whole static batch of 100 of the 300 here), and compared on those."""
    import compiler.calibration as cal
    from compiler.accuracy import write_accuracy_report

    seen = []
    real = cal.calibrate
    monkeypatch.setattr(cal, "_LAST", {})  # whatever earlier tests compiled
    monkeypatch.setattr(cal, "calibrate", lambda g, data, *a, **k: seen.append(data["X"]) or real(g, data, *a, **k))
    opts = {"calibration_data": str(calib_npz), "input_shapes": {"X": [BATCH, 64]}, "calibration_method": "entropy"}
    rep = write_accuracy_report(str(mlp_onnx), None, opts, tmp_path / "acc.json")
    assert (rep["calibration_samples"], rep["held_back"], rep["samples"]) == (200, 100, 100)
    everything = np.load(calib_npz)["X"]
    assert len(seen) == 1 and len(seen[0]) == 200
    used = {r.tobytes() for r in seen[0]}
    held = [r for r in everything if r.tobytes() not in used]
    assert len(held) == 100  # the other 100 never reached the calibrator


def test_held_back_samples_are_unseen_by_calibration(mlp_onnx, digits, tmp_path) -> None:
    """Scale the samples `hold_back` sets aside by 8: with ``max`` calibration on
    the others they saturate, and the report shows it; unscaled, it does not."""
    from compiler.accuracy import build_accuracy_report, hold_back

    x = digits[0][:300].copy()
    _, held = hold_back(len(x), BATCH)

    def cosine(arr: np.ndarray) -> float:
        np.savez(tmp_path / "c.npz", X=arr)
        rep = build_accuracy_report(str(mlp_onnx), {"calibration_data": str(tmp_path / "c.npz"),
                                                    "input_shapes": {"X": [BATCH, 64]}, "calibration_method": "max",
                                                    "extra": {"progress": False}})
        return min(layer["cosine"] for layer in rep["layers"])

    plain = cosine(x)
    x[held] *= 8
    assert plain > 0.999 and cosine(x) < 0.99


@pytest.mark.parametrize(("n", "unit", "held"), [(300, 100, 100), (64, 1, 13), (5, 1, 1), (1, 1, 0), (100, 100, 0),
                                                 (10_000, 1, 256), (10_000, 100, 200), (150, 100, 100)])
def test_hold_back_sizes(n: int, unit: int, held: int) -> None:
    from compiler.accuracy import hold_back

    calib, ev = hold_back(n, unit)
    if held == 0:  # too few to split: compared on the calibration samples themselves
        assert np.array_equal(calib, np.arange(n)) and np.array_equal(ev, calib)
        return
    assert len(ev) == held and len(ev) % unit == 0
    assert not set(calib) & set(ev) and sorted([*calib, *ev]) == list(range(n))
    again, ev2 = hold_back(n, unit)
    assert np.array_equal(ev, ev2) and np.array_equal(calib, again)  # seeded: the same split every run


def test_accuracy_report_runs_the_quantize_pass_with_its_options(mlp_onnx, calib_npz) -> None:
    from compiler.accuracy import build_accuracy_report

    def snrs(quantize: str) -> list[float]:
        rep = build_accuracy_report(str(mlp_onnx), {
            "calibration_data": str(calib_npz), "input_shapes": {"X": [BATCH, 64]}, "extra": {"progress": False},
            "passes": f"canonicalize,fuse,{quantize},place,assign-buffers"})
        return sorted(layer["snr_db"] for layer in rep["layers"])

    # GPTQ off on both sides: its own rounding already takes out much of the mean error
    on, off = snrs("quantize{gptq=false}"), snrs("quantize{gptq=false, bias_correction=false}")
    assert on != off  # the option reached the pass
    assert sum(on) > sum(off)  # and bias correction helps on the samples it was measured on


def test_accuracy_report_without_calibration_data_is_a_usage_error(mlp_onnx) -> None:
    from compiler.accuracy import build_accuracy_report

    with pytest.raises(UsageError, match="needs --calibration_data"):
        build_accuracy_report(str(mlp_onnx), {"input_shapes": {"X": [BATCH, 64]}})
