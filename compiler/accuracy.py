"""INT8 accuracy report: how far the quantized model is from the float one.

    report = build_accuracy_report("mlp.onnx", {"calibration_data": "calib.npz"})
    report["outputs"]["probabilities"]   # {"cosine": 0.9999, "mse": 1e-6, "max_abs_error": 0.003}
    report["layers"][0]                  # the worst layer: {"name": "h", "snr_db": 31.2, "cosine": 0.9996}

The samples are held back from calibration: of the S calibration samples a
seeded random fifth (`hold_back`; a whole number of the model's static batches,
at most `MAX_SAMPLES`) is set aside, the INT8 model is calibrated on the rest,
and both models are compared on the held-back ones — samples the quantizer
never saw, as a user's real inputs will be.  The shipped ``.om`` is calibrated
on all S (as cross-validation reports a held-out estimate and ships the model
fitted on everything).  With too few samples to split (S no more than one
static batch) the report says ``"held_back": 0`` and compares on the
calibration samples themselves.

Both models are compiled from the same graph: the float one is the pipeline
without ``quantize``; the quantized one keeps each integer Cube op's result
under the float op's name, so layers pair up by name.  The output of every
quantized layer is made an extra graph output *before* memory planning (an
arena slot reused later would be overwritten before it is read back).  Layers
whose quantized result is int8 (requantize fused) are dequantized with their
``y_scale`` first.  SNR = 10·log10(Σ ref² / Σ (ref − quant)²), worst first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from codegen import build_executable
from compiler.calibration import check_calibration_options, compile_calibrator
from compiler.calibration_data import load_calibration_data
from compiler.driver import CompileOptions, lower_to_ir
from compiler.pipeline import default_pipeline, run_pipeline
from ir.ops.quant import INT_CUBE_KINDS
from passes.base import PassContext
from passes.calibrator import static_batch
from passes.manager import split_pipeline
from passes.target.soc import load_soc
from runtime import Session
from runtime.om import write_atomic

__all__ = ["accuracy_report", "build_accuracy_report", "hold_back", "output_metrics", "snr_db",
           "write_accuracy_report"]

MAX_SAMPLES = 256
HOLD_BACK = 0.2  # the fraction of the calibration samples the report evaluates on


def hold_back(n: int, unit: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (calibrate, evaluate) splitting `n` samples: ``ceil(HOLD_BACK * n)``
    rounded to a multiple of `unit` (the static batch; at least one, at most
    `MAX_SAMPLES`), drawn by a seeded permutation (calibration files are often
    sorted, by class or by time); the rest calibrate.  When that would leave
    nothing to calibrate on, nothing is held back: (all, all)."""
    want = max(unit, round(math.ceil(HOLD_BACK * n) / unit) * unit)
    held = min(want, max(unit, MAX_SAMPLES // unit * unit))
    if n - held < 1:
        every = np.arange(n)
        return every, every
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[held:]), np.sort(perm[:held])


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    r = np.asarray(ref, np.float64).ravel()
    e = r - np.asarray(got, np.float64).ravel()
    noise, signal = float(e @ e), float(r @ r)
    if noise == 0:
        return float("inf")
    return 10.0 * np.log10(max(signal, 1e-300) / noise)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def output_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Cosine similarity, MSE and max absolute error of `got` against `ref`."""
    if ref.dtype.kind not in "fc":  # labels and indices: agreement rate
        return {"agreement": float(np.mean(np.asarray(ref) == np.asarray(got)))}
    d = np.asarray(ref, np.float64) - np.asarray(got, np.float64)
    return {"cosine": _cosine(ref, got), "mse": float(np.mean(d * d)), "max_abs_error": float(np.max(np.abs(d)))}


def _session(exe: Any) -> Any:
    if hasattr(exe, "run") and hasattr(exe, "get_outputs"):
        return exe
    return Session(exe)


def _run_all(exe: Any, samples: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Run every sample (batched as the model's static batch dim requires) and
    concatenate each output along axis 0."""
    sess = _session(exe)
    names = [o.name for o in sess.get_outputs()]
    ins = sess.get_inputs()
    n = next(iter(samples.values())).shape[0]
    static = [i.shape[0] for i in ins if i.shape and isinstance(i.shape[0], int)]
    b = int(static[0]) if static else batch_size
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    # a static batch takes whole batches only (the tail is dropped, or wrapped if it is all there is)
    starts = range(0, max(n - n % b, 1), b) if static else range(0, n, b)
    for s in starts:
        idx = np.arange(s, s + b) % n if static else np.arange(s, min(s + b, n))
        for k, v in zip(names, sess.run(None, {k: a[idx] for k, a in samples.items()})):
            parts[k].append(np.asarray(v))
    return {k: (np.concatenate(v) if v and v[0].ndim else np.stack(v)) for k, v in parts.items() if v}


def accuracy_report(float_exe: Any, quant_exe: Any, samples: Mapping[str, np.ndarray], *,
                    outputs: Sequence[str] | None = None, scales: Mapping[str, float] | None = None,
                    batch_size: int = 32, equalized: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compare two executables (or Sessions) on `samples` ({input: [S, ...]}).

    Outputs both have are paired by name: those in `outputs` (default: all)
    are reported under "outputs" (cosine, MSE, max abs error); those in
    `scales` (layer name -> scale of its int8 result, 1.0 for f32 results)
    under "layers" (SNR in dB, cosine), worst first.  A layer in `equalized`
    (name -> `passes._equalize.Equalized`) computes its float result times a
    per-channel scale in the quantized model: that scale is divided out first."""
    scales = dict(scales or {})
    equalized = dict(equalized or {})
    ref = _run_all(float_exe, samples, batch_size)
    got = _run_all(quant_exe, samples, batch_size)
    common = [k for k in ref if k in got]
    outs = list(outputs) if outputs is not None else [k for k in common if k not in scales]
    report: dict[str, Any] = {"samples": int(next(iter(ref.values())).shape[0]) if ref else 0,
                              "outputs": {}, "layers": []}
    for k in common:
        g = got[k]
        if g.dtype == np.int8 and ref[k].dtype != np.int8:
            g = g.astype(np.float32) * np.float32(scales.get(k, 1.0))
        if k in equalized:
            e = equalized[k]
            shape = [1] * g.ndim
            shape[e.axis] = -1
            g = g / np.asarray(e.scale, np.float32).reshape(shape)
        if k in outs:
            report["outputs"][k] = output_metrics(ref[k], g)
        if k in scales and ref[k].dtype.kind == "f":
            report["layers"].append({"name": k, "snr_db": snr_db(ref[k], g), "cosine": _cosine(ref[k], g)})
    report["layers"].sort(key=lambda r: r["snr_db"])
    return report


def _options(opts: Any) -> CompileOptions:
    if isinstance(opts, CompileOptions):
        return opts
    d = dict(opts or {})
    known = {k: v for k, v in d.items() if k in CompileOptions.__dataclass_fields__}
    return CompileOptions(**known)


def build_accuracy_report(model: Any, options: Any = None, samples: Mapping[str, np.ndarray] | None = None,
                          ) -> dict[str, Any]:
    """Compile `model` in float and INT8 (``options``: `CompileOptions` or a dict of
    its fields; ``calibration_data`` is required) and compare them on `samples`
    (default: the calibration samples `hold_back` sets aside, the INT8 model
    calibrated on the others; given `samples`, it is calibrated on all)."""
    opts = _options(options)
    opts.precision_mode = "allow_quantize"
    soc = load_soc(opts.soc_version)
    g = lower_to_ir(model, opts)
    items = split_pipeline(opts.passes or default_pipeline("allow_quantize"))
    names = [i.partition("{")[0].strip() for i in items]
    if "quantize" not in names:
        items.append("quantize")
        names.append("quantize")
    cut = names.index("quantize")
    pre = items[:cut]
    post = [i for i, n in zip(items[cut + 1 :], names[cut + 1 :]) if n != "assign-buffers"]
    given = samples is not None
    check_calibration_options(opts)
    data = load_calibration_data(opts.calibration_data, g.inputs)
    n = next(iter(data.values())).shape[0]
    if given:
        calib_idx = held_idx = np.arange(n)
    else:
        calib_idx, held_idx = hold_back(n, static_batch(g.inputs) or 1)
        samples = {k: v[held_idx] for k, v in data.items()}
    calibrator = compile_calibrator(g, opts, {k: v[calib_idx] for k, v in data.items()})
    ctx = PassContext(soc=soc, options=opts.pass_options(calibrator=calibrator))
    if pre:
        run_pipeline(g, ",".join(pre), ctx)
    fg = g.clone()
    run_pipeline(g, ",".join([items[cut], *post]), ctx)  # the quantize item keeps its options
    if post:
        run_pipeline(fg, ",".join(post), PassContext(soc=soc, options={"precision_mode": "force_fp32"}))
    layers = [op for op in g.ops if op.kind in INT_CUBE_KINDS]
    float_names = {v.name for v in fg.values()}
    model_outputs = [v.name for v in g.outputs]
    scales: dict[str, float] = {}
    for op in layers:
        r = op.result
        if r.name not in float_names or any(o is r for o in g.outputs):
            continue
        if op.attrs.get("out") == "i8":
            scales[r.name] = float(op.attrs["y_scale"])
        g.outputs.append(r)
        fg.outputs.append(fg.value(r.name))
    for op in layers:
        if op.attrs.get("out", "f32") == "f32":
            scales.setdefault(op.result.name, 1.0)
    rep = accuracy_report(build_executable(fg, soc_version=opts.soc_version),
                          build_executable(g, soc_version=opts.soc_version), samples,
                          outputs=model_outputs, scales=scales, equalized=ctx.equalized)
    rep["calibration"] = opts.calibration_method
    rep["calibration_samples"] = len(calib_idx)
    rep["held_back"] = 0 if given or len(held_idx) == n else len(held_idx)
    rep["quantized_layers"] = len(layers)
    return rep


def write_accuracy_report(model: Any, exe: Any, opts: Any, path: str | Path) -> dict[str, Any]:
    """``--accuracy_report=FILE``: the report as JSON (`exe`, the compiled INT8
    executable, is not needed: both models are rebuilt with layer outputs)."""
    rep = build_accuracy_report(model, opts)
    write_atomic(Path(path), (json.dumps(rep, indent=2, sort_keys=True, allow_nan=True) + "\n").encode())
    return rep
