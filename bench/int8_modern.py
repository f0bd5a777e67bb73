"""INT8 on the modern set: atcpy's default INT8 against onnxruntime's ``quantize_static``.

The digits bench (bench/int8_accuracy.py) has two tiny models; this one asks
whether atcpy's *default* INT8 holds up on real architectures (depthwise convs,
SE gates, SiLU/HardSwish, attention).  The models are torchvision exports with
random weights (README, "modern set"), so there are no labels: the measure is
the output cosine to onnxruntime's fp32 run, averaged over the eval images.

For each model in ``--dir`` (input ``input``, [1, 3, 224, 224]): 32 seeded
random-normal calibration images and 16 other eval images; atcpy
``compile_model(precision_mode="allow_quantize")`` with the method given (by
default atcpy's own default), beside onnxruntime's ``quantize_static`` (QDQ,
symmetric int8 activations and weights, per-channel weights, percentile
99.999) calibrated on the same images.

    python bench/int8_modern.py [--models resnet18,mobilenet_v2] [--method mse,percentile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5",
          "regnet_y_400mf", "densenet121", "convnext_tiny", "swin_t", "deeplabv3_mobilenet_v3_large")
CALIB, EVAL = 32, 16


def images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and eval images: disjoint draws from one seeded generator."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((CALIB + EVAL, 1, 3, 224, 224)).astype(np.float32)
    return x[:CALIB], x[CALIB:]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def ort_run(model: str, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return [sess.run(None, {"input": xi})[0] for xi in x]


def ort_quantize(model: Path, calib: np.ndarray, dst: Path) -> Path:
    """onnxruntime's static INT8 as the issue configures it: QDQ, symmetric, per channel, percentile 99.999."""
    from bench.int8_accuracy import ort_quantize_static

    return ort_quantize_static(model, [{"input": c} for c in calib], dst, "percentile", percentile=99.999)


def atcpy_run(model: Path, calib: np.ndarray, x: np.ndarray, method: str) -> tuple[list[np.ndarray], float]:
    from compiler import compile_model
    from runtime import Session

    opts: dict[str, Any] = {"precision_mode": "allow_quantize", "progress": False, "calibration_method": method}
    with tempfile.TemporaryDirectory() as d:
        npz = Path(d) / "calib.npz"
        np.savez(npz, input=calib[:, 0])
        t0 = time.perf_counter()
        exe = compile_model(str(model), calibration_data=str(npz), **opts)
        seconds = time.perf_counter() - t0
    sess = Session(exe)
    return [sess.run(None, {"input": xi})[0] for xi in x], seconds


def bench(model: Path, methods: list[str]) -> dict[str, Any]:
    """One model: onnxruntime's INT8 and atcpy's under each method, as mean cosine to fp32."""
    calib, x = images()
    ref = ort_run(str(model), x)
    with tempfile.TemporaryDirectory() as d:
        ort_q = ort_run(str(ort_quantize(model, calib, Path(d) / "q.onnx")), x)
    row: dict[str, Any] = {"model": model.stem, "onnxruntime": float(np.mean([cosine(a, r) for a, r in zip(ort_q, ref)]))}
    for m in methods:
        ours, seconds = atcpy_run(model, calib, x, m)
        row[m] = float(np.mean([cosine(a, r) for a, r in zip(ours, ref)]))
        row[f"{m}_compile_s"] = seconds
    return row


def default_method() -> str:
    from compiler.driver import CompileOptions

    return CompileOptions.__dataclass_fields__["calibration_method"].default


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="/tmp/atcpy-modern")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--method", default=None,
                   help="atcpy --calibration_method, or several comma-separated (default: atcpy's default)")
    p.add_argument("--json")
    a = p.parse_args(argv)
    methods = (a.method or default_method()).split(",")
    print(f"atcpy default method: {default_method()}; {CALIB} calibration images, {EVAL} eval images; "
          "mean cosine to fp32 (onnxruntime); '>= ort' for the first method")
    print(f"{'model':32s} " + " ".join(f"{m:>10s}" for m in methods) + f" {'ort':>8s} {'>= ort':>7s} {'compile s':>10s}")
    rows = []
    for name in a.models.split(","):
        path = Path(a.dir) / f"{name}.onnx"
        if not path.exists():
            print(f"{name:32s} (missing: {path})")
            continue
        r = bench(path, methods)
        rows.append(r)
        ok = "yes" if r[methods[0]] >= r["onnxruntime"] else "NO"
        print(f"{r['model']:32s} " + " ".join(f"{r[m]:10.4f}" for m in methods)
              + f" {r['onnxruntime']:8.4f} {ok:>7s} {r[methods[0] + '_compile_s']:10.1f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"methods": methods, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
