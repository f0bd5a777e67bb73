"""INT8 accuracy: atcpy's post-training quantization against FP32 and onnxruntime.

Two models on scikit-learn's digits (8x8 images, 10 classes), trained here:

- an MLP (64-64-32-10) with scikit-learn, exported with skl2onnx;
- a small CNN (conv8-pool-conv16-pool-fc32-fc10) with torch, exported with torch.onnx.

For each: top-1 accuracy on held-out data of FP32 (atcpy), INT8 (atcpy, per
calibration method), and onnxruntime's ``quantize_static`` (QDQ, symmetric
int8 activations and weights, per-channel weights, the same calibration
samples), plus the cosine of each INT8 model's outputs to the FP32 outputs.

    python bench/int8_accuracy.py [--calib 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH = 100
METHODS = ("max", "percentile", "entropy")


def load_data(seed: int = 0) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return tuple(train_test_split(x, y, test_size=500, random_state=seed, stratify=y))


def train_mlp(xtr: np.ndarray, ytr: np.ndarray, path: Path) -> None:
    import onnx
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier((64, 32), max_iter=400, random_state=0).fit(xtr, ytr)
    onnx.save(to_onnx(clf, xtr[:1], options={"zipmap": False}, target_opset=17), str(path))


def train_cnn(xtr: np.ndarray, ytr: np.ndarray, path: Path, epochs: int = 40) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10),
    )
    x = torch.tensor(xtr.reshape(-1, 1, 8, 8))
    y = torch.tensor(ytr, dtype=torch.long)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    kw: dict[str, Any] = {"input_names": ["X"], "output_names": ["logits"], "opset_version": 17,
                          "dynamic_axes": {"X": {0: "N"}, "logits": {0: "N"}}}
    try:
        torch.onnx.export(net, (x[:1],), str(path), dynamo=False, **kw)
    except TypeError:  # older torch without the dynamo switch
        torch.onnx.export(net, (x[:1],), str(path), **kw)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _batched(run, x: np.ndarray) -> np.ndarray:
    return np.concatenate([run(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])


def atcpy_outputs(model: Path, x: np.ndarray, out: int, shape: list[int], **opts: Any) -> tuple[np.ndarray, dict]:
    from compiler.driver import compile_model
    from runtime import Session

    exe = compile_model(str(model), input_shapes={"X": [BATCH, *shape]}, **opts)
    sess = Session(exe)
    return _batched(lambda b: sess.run(None, {"X": b})[out], x), exe.report


def ort_outputs(model: Path, x: np.ndarray, out: int) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return _batched(lambda b: sess.run(None, {"X": b})[out], x)


def ort_quantize(model: Path, calib: np.ndarray, dst: Path, method: str) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"X": calib[i : i + BATCH]} for i in range(0, len(calib), BATCH)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    cm = {"max": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
          "entropy": CalibrationMethod.Entropy}[method]
    quantize_static(
        str(model), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=cm,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibPercentile": 99.9},
    )
    return dst


def bench_model(name: str, model: Path, xte: np.ndarray, yte: np.ndarray, calib: np.ndarray, out: int,
                shape: list[int], tmp: Path) -> list[dict[str, Any]]:
    npz = tmp / f"{name}-calib.npz"
    np.savez(npz, X=calib.reshape(-1, *shape))
    x = xte.reshape(-1, *shape)
    ref, rep = atcpy_outputs(model, x, out, shape, precision_mode="force_fp32")
    rows = [{"model": name, "engine": "atcpy", "mode": "fp32", "top1": float((ref.argmax(1) == yte).mean()),
             "cosine": 1.0, "weights_bytes": rep["memory"]["weights_bytes"]}]
    ort_ref = ort_outputs(model, x, out)
    rows.append({"model": name, "engine": "onnxruntime", "mode": "fp32",
                 "top1": float((ort_ref.argmax(1) == yte).mean()), "cosine": _cos(ort_ref, ref)})
    for m in METHODS:
        q, rep = atcpy_outputs(model, x, out, shape, precision_mode="allow_quantize",
                               calibration_data=str(npz), calibration_method=m, extra={"progress": False})
        rows.append({"model": name, "engine": "atcpy", "mode": f"int8 {m}", "top1": float((q.argmax(1) == yte).mean()),
                     "cosine": _cos(q, ref), "weights_bytes": rep["memory"]["weights_bytes"],
                     "quantized_ops": rep["quantization"]["quantized_ops"]})
    for m in METHODS:
        try:
            qm = ort_quantize(model, calib.reshape(-1, *shape), tmp / f"{name}-ort-{m}.onnx", m)
            q = ort_outputs(qm, x, out)
            rows.append({"model": name, "engine": "onnxruntime", "mode": f"int8 {m}",
                         "top1": float((q.argmax(1) == yte).mean()), "cosine": _cos(q, ort_ref)})
        except Exception as e:  # noqa: BLE001 - an ORT calibrator failing is a result to print, not a crash
            rows.append({"model": name, "engine": "onnxruntime", "mode": f"int8 {m}", "error": str(e)[:120]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=200, help="calibration samples (from the training split)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    xtr, xte, ytr, yte = load_data()
    calib = xtr[: args.calib]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        train_mlp(xtr, ytr, tmp / "mlp.onnx")
        rows += bench_model("mlp", tmp / "mlp.onnx", xte, yte, calib, 1, [64], tmp)
        train_cnn(xtr, ytr, tmp / "cnn.onnx")
        rows += bench_model("cnn", tmp / "cnn.onnx", xte, yte, calib, 0, [1, 8, 8], tmp)
    print(f"{'model':6} {'engine':12} {'mode':16} {'top-1':>7} {'cosine':>9} {'weights':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:6} {r['engine']:12} {r['mode']:16} error: {r['error']}")
            continue
        wb = f"{r['weights_bytes']:>9}" if "weights_bytes" in r else " " * 9
        print(f"{r['model']:6} {r['engine']:12} {r['mode']:16} {100 * r['top1']:6.1f}% {r['cosine']:9.5f} {wb}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
