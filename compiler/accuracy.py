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

``--accuracy_target`` (`reach_accuracy_target`) reuses the split: the float
model runs once, and each INT8 variant (a keep-list) quantizes a clone of the
graph as it stands before ``quantize`` (`_prepare`, then `_measure` per variant).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codegen import build_executable
from compiler.calibration import check_calibration_options, compile_calibrator
from compiler.calibration_data import load_calibration_data
from compiler.driver import CompileOptions, compile_with, lower_to_ir
from compiler.pipeline import default_pipeline, run_pipeline
from ir.core import Graph
from ir.errors import UnsupportedModelError, UsageError
from ir.ops.quant import INT_CUBE_KINDS
from passes.base import PassContext
from passes.calibrator import static_batch
from passes.manager import split_pipeline
from passes.quantize import parse_keep_dtype, quantizable
from passes.target.soc import load_soc
from runtime import Session
from runtime.om import write_atomic

__all__ = ["AccuracyTargetMissed", "accuracy_report", "build_accuracy_report", "compile_to_target", "hold_back",
           "output_cosine", "output_metrics", "reach_accuracy_target", "snr_db", "write_accuracy_report"]

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
    if np.array_equal(a, b):  # exactly 1 (the dot product can round below): all-float meets a target of 1
        return 1.0
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
                    batch_size: int = 32, equalized: Mapping[str, Any] | None = None,
                    reference: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Compare two executables (or Sessions) on `samples` ({input: [S, ...]}).

    Outputs both have are paired by name: those in `outputs` (default: all)
    are reported under "outputs" (cosine, MSE, max abs error); those in
    `scales` (layer name -> scale of its int8 result, 1.0 for f32 results)
    under "layers" (SNR in dB, cosine), worst first.  A layer in `equalized`
    (name -> `passes._equalize.Equalized`) computes its float result times a
    per-channel scale in the quantized model: that scale is divided out first.
    `reference`, the float results already run, stands in for `float_exe`."""
    scales = dict(scales or {})
    equalized = dict(equalized or {})
    ref = dict(reference) if reference is not None else _run_all(float_exe, samples, batch_size)
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


@dataclass
class _Prepared:
    """What every INT8 variant of one model shares: the graph up to ``quantize``
    (each variant quantizes a clone), the passes after it, the held-back samples
    and the float model's results on them (run once)."""

    opts: CompileOptions
    soc: Any
    graph: Graph  # after the passes before quantize
    quant_items: list[str]  # the quantize item (with its options) and the passes after it
    samples: Mapping[str, np.ndarray]
    calibrator: Any
    calibration_samples: int
    held_back: int
    reference: dict[str, np.ndarray] = field(default_factory=dict)


def _prepare(model: Any, options: Any, samples: Mapping[str, np.ndarray] | None) -> _Prepared:
    """Lower `model`, run the passes before ``quantize``, split the samples
    (`hold_back`) and run the float model on the evaluated ones, its every
    quantizable layer an output."""
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
    assert samples is not None
    calibrator = compile_calibrator(g, opts, {k: v[calib_idx] for k, v in data.items()})
    # every variant quantizes a clone of one graph: `SampleCalibrator` measures its ranges once and
    # reuses them (keyed by the graph's fingerprint), whatever the keep-list a variant quantizes with
    if items[:cut]:
        run_pipeline(g, ",".join(items[:cut]), PassContext(soc=soc, options=opts.pass_options(calibrator=calibrator)))
    prep = _Prepared(opts, soc, g, [items[cut], *post], samples, calibrator, len(calib_idx),
                     0 if given or len(held_idx) == n else len(held_idx))
    fg = g.clone()
    if post:
        run_pipeline(fg, ",".join(post), PassContext(soc=soc, options={"precision_mode": "force_fp32"}))
    layer_names = {op.results[0].name for op in g.ops if quantizable(op)}
    fg.outputs += [v for v in fg.values() if v.name in layer_names and not any(o is v for o in fg.outputs)]
    prep.reference = _run_all(build_executable(fg, soc_version=opts.soc_version), samples, 32)
    return prep


def _measure(prep: _Prepared, keep: set[str]) -> dict[str, Any]:
    """Quantize a clone of the prepared graph keeping `keep` in float, run it on
    the held-back samples and compare with the float results."""
    # a text of one name a line (the option is a string; a trailing newline keeps one name from being read as a path)
    opts = dataclasses.replace(prep.opts, keep_dtype="".join(f"{k}\n" for k in sorted(keep)) or None)
    g = prep.graph.clone()
    ctx = PassContext(soc=prep.soc, options=opts.pass_options(calibrator=prep.calibrator))
    run_pipeline(g, ",".join(prep.quant_items), ctx)  # the quantize item keeps its options
    layers = [op for op in g.ops if op.kind in INT_CUBE_KINDS]
    model_outputs = [v.name for v in g.outputs]
    scales: dict[str, float] = {}
    for op in layers:
        r = op.result
        if r.name not in prep.reference:
            continue
        scales[r.name] = float(op.attrs["y_scale"]) if op.attrs.get("out") == "i8" else 1.0
        if not any(o is r for o in g.outputs):
            g.outputs.append(r)
    rep = accuracy_report(None, build_executable(g, soc_version=opts.soc_version), prep.samples,
                          outputs=model_outputs, scales=scales, equalized=ctx.equalized, reference=prep.reference)
    _added_noise(g, rep["layers"])
    rep["calibration"] = opts.calibration_method
    rep["calibration_samples"] = prep.calibration_samples
    rep["held_back"] = prep.held_back
    rep["quantized_layers"] = len(layers)
    return rep


def _added_noise(g: Graph, layers: list[dict[str, Any]]) -> None:
    """Each layer's own share of the error, as ``added_noise``: its relative noise
    (``10^(-SNR/10)``) less the largest among the nearest quantized layers
    upstream.  A layer's SNR counts every error before it, so the deepest layers
    rank worst whatever they add; the difference names the layer that adds it."""
    noise = {r["name"]: 10.0 ** (-r["snr_db"] / 10.0) if math.isfinite(r["snr_db"]) else 0.0 for r in layers}
    producer = {r.name: op for op in g.ops for r in op.results}
    for layer in layers:
        stack = [v for v in producer[layer["name"]].operands if v is not None]
        seen: set[str] = set()
        upstream = 0.0
        while stack:
            v = stack.pop()
            if v.name in seen:
                continue
            seen.add(v.name)
            if v.name in noise:
                upstream = max(upstream, noise[v.name])
            elif v.name in producer:
                stack += [o for o in producer[v.name].operands if o is not None]
        layer["added_noise"] = max(noise[layer["name"]] - upstream, 0.0)


def build_accuracy_report(model: Any, options: Any = None, samples: Mapping[str, np.ndarray] | None = None,
                          ) -> dict[str, Any]:
    """Compile `model` in float and INT8 (``options``: `CompileOptions` or a dict of
    its fields; ``calibration_data`` is required) and compare them on `samples`
    (default: the calibration samples `hold_back` sets aside, the INT8 model
    calibrated on the others; given `samples`, it is calibrated on all)."""
    prep = _prepare(model, options, samples)
    return _measure(prep, parse_keep_dtype(prep.opts.keep_dtype))


def output_cosine(rep: Mapping[str, Any]) -> float:
    """The accuracy target's measure: the lowest cosine over the float outputs."""
    cosines = [m["cosine"] for m in rep["outputs"].values() if "cosine" in m]
    if not cosines:
        raise UsageError("--accuracy_target measures the cosine of float outputs; this model has none")
    return min(cosines)


def _step(cosine: float, target: float, left: int) -> int:
    """Layers to roll back next: one when near the target; a tenth of those left
    (at least one) while the error ``1 - cosine`` is over four times the error
    the target allows, so a model far off does not take one compile a layer."""
    if 1.0 - cosine > 4.0 * (1.0 - target):
        return max(1, math.ceil(left / 10))
    return 1


def reach_accuracy_target(model: Any, options: Any, target: float) -> dict[str, Any]:
    """``--accuracy_target``: quantize, measure the output cosine on the held-back
    samples (`build_accuracy_report`'s split), and while it is below `target`
    keep the quantized layers that add the most noise in float (`_added_noise`;
    `_step` of them), then measure again.  Not "the rollback that helps most":
    that costs a compile and a run per layer per step, while the added noise
    comes with the measurement.  Not the lowest SNR either: that ranks the
    deepest layers first for the error they inherit (mobilenet_v3_small needed
    33 of 36 layers in float that way).  Ranges are measured once (`_prepare`);
    each step re-runs the quantize pass (GPTQ and bias correction see the new float neighbours).
    Ends when the target holds or no quantized layer is left (all float).
    Returns ``{"target", "cosine", "met", "kept_in_float", "rolled_back",
    "iterations", "history"}`` (the best cosine reached when not met)."""
    prep = _prepare(model, options, None)
    keep = parse_keep_dtype(prep.opts.keep_dtype)
    rolled: list[str] = []
    history: list[dict[str, Any]] = []
    best: tuple[float, list[str]] = (-math.inf, [])
    while True:
        rep = _measure(prep, keep | set(rolled))
        cos = output_cosine(rep)
        history.append({"rolled_back": len(rolled), "quantized_layers": rep["quantized_layers"], "cosine": cos})
        if cos > best[0]:
            best = (cos, list(rolled))
        ranked = sorted(rep["layers"], key=lambda r: -r["added_noise"])
        left = [layer["name"] for layer in ranked if layer["name"] not in rolled]
        if cos >= target or not left:
            break
        rolled += left[:_step(cos, target, len(left))]
    cosine, kept = best if best[0] < target else (cos, rolled)
    return {"target": target, "cosine": cosine, "met": cosine >= target, "kept_in_float": kept,
            "rolled_back": len(kept), "iterations": len(history), "history": history,
            "held_back": prep.held_back, "calibration_samples": prep.calibration_samples}


class AccuracyTargetMissed(UnsupportedModelError):
    """--accuracy_target not met even with every quantized layer in float (exit 3);
    `report` holds what the loop reached, for --report."""

    kind = "accuracy target not met"

    def __init__(self, target: dict) -> None:
        self.report = {"accuracy_target": target}
        super().__init__(f"--accuracy_target={target['target']!r}: the best output cosine reached is "
                         f"{target['cosine']:.6f}, with {target['rolled_back']} layer(s) in float "
                         f"({target['iterations']} compile(s) measured)")


def compile_to_target(model: Any, opts: CompileOptions) -> Any:
    """`compile_with` after the accuracy target's loop: the layers it keeps in float
    join ``opts.keep_dtype`` (`opts` is updated, so an --accuracy_report afterwards
    describes the shipped model), which is calibrated on every sample, as a plain
    INT8 compile is.  Raises `AccuracyTargetMissed` (exit 3) when even all-float misses."""
    opts.check()  # usage errors before the loop compiles anything
    if opts.accuracy_target is None:
        return compile_with(model, opts)
    t0 = time.perf_counter()
    target = reach_accuracy_target(model, opts, float(opts.accuracy_target))
    target["seconds"] = round(time.perf_counter() - t0, 3)
    if not target["met"]:
        raise AccuracyTargetMissed(target)
    keep = sorted(parse_keep_dtype(opts.keep_dtype) | set(target["kept_in_float"]))
    opts.keep_dtype = "".join(f"{k}\n" for k in keep) or None
    return compile_with(model, opts, accuracy_target=target)


def write_accuracy_report(model: Any, exe: Any, opts: Any, path: str | Path) -> dict[str, Any]:
    """``--accuracy_report=FILE``: the report as JSON (`exe`, the compiled INT8
    executable, is not needed: both models are rebuilt with layer outputs)."""
    rep = build_accuracy_report(model, opts)
    write_atomic(Path(path), (json.dumps(rep, indent=2, sort_keys=True, allow_nan=True) + "\n").encode())
    return rep
