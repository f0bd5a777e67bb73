"""`atcpy-compare`: layer-wise comparison of an .om against onnxruntime (issue 19 item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.compare import main as compare
from compiler.compare import metrics
from compiler.driver import compile_model
from runtime.session import Session

EXAMPLE = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def oms(model, tmp_path_factory) -> dict[str, Path]:
    """tiny_cnn compiled fp32, fp16 and INT8 (calibrated on seeded normal samples)."""
    d = tmp_path_factory.mktemp("compare")
    cal = d / "cal.npz"
    np.savez(cal, input=np.random.default_rng(0).normal(size=(8, 1, 8, 8)).astype(np.float32))
    out = {}
    for tag, kw in {"fp32": {"precision_mode": "force_fp32"}, "fp16": {"precision_mode": "force_fp16"},
                    "int8": {"precision_mode": "allow_quantize", "calibration_data": str(cal)}}.items():
        out[tag] = compile_model(str(model), **kw).save(d / f"{tag}.om")
    return out


def _run(model: Path, om: Path, outdir: Path, *extra: str) -> tuple[int, dict]:
    rc = compare([f"--model={model}", f"--om={om}", f"--input={EXAMPLE / 'tiny_cnn_input.npy'}",
                  f"--output={outdir}", *extra])
    doc = json.loads((outdir / "compare.json").read_text()) if rc == 0 else {}
    return rc, doc


def _compared(doc: dict) -> list[dict]:
    return [n for n in doc["nodes"] if n["cosine"] is not None]


def test_fp32_every_node_matches(model, oms, tmp_path, capsys) -> None:
    rc, doc = _run(model, oms["fp32"], tmp_path)
    assert rc == 0
    by = {n["node"]: n for n in doc["nodes"]}
    assert len(doc["nodes"]) == 11
    # every node's tensor that exists in the .om is compared; the inner nodes of a fused chain are not
    assert {n["node"] for n in _compared(doc)} == {"/relu1/Relu", "/relu2/Relu", "/pool/MaxPool", "/Flatten",
                                                   "/relu3/Relu", "/fc2/Gemm", "/Softmax"}
    assert all(n["cosine"] >= 0.99999 for n in _compared(doc))
    assert by["/bn1/BatchNormalization"]["status"] == "fused into step 0 (fused.conv)"
    assert by["/conv1/Conv"]["status"].startswith("fused into step 0")
    assert doc["first_below"] is None
    assert "every compared node has cosine >= 0.99" in capsys.readouterr().out
    header = (tmp_path / "compare.csv").read_text().splitlines()[0]
    assert header.endswith("cosine,max_abs,max_rel,mean_abs,rmse,kl")


def test_fp16_is_compared_through_the_f16_copies(model, oms, tmp_path) -> None:
    rc, doc = _run(model, oms["fp16"], tmp_path)
    assert rc == 0
    assert len(_compared(doc)) == 7
    assert all(0.999 <= n["cosine"] < 1.0 for n in _compared(doc) if n["node"] != "/Flatten")


def test_int8_names_the_first_node_below_the_threshold(model, oms, tmp_path, capsys) -> None:
    rc, doc = _run(model, oms["int8"], tmp_path, "--threshold=0.9999")
    assert rc == 0
    assert len(_compared(doc)) == 7  # INT8 results are dequantized with their step's scale
    assert doc["first_below"] == "/relu1/Relu"
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("first node below 0.9999:")]
    assert line and "/relu1/Relu (Relu, step 1 quant.conv): cosine 0." in line[0]
    assert "inputs: input=(graph input)" in line[0]  # the fused chain's inputs, weights left out
    assert all(n["cosine"] > 0.8 for n in _compared(doc))  # dequantized: close, not garbage


def test_run_all_keeps_every_step_result(oms) -> None:
    sess = Session(oms["fp32"])
    x = np.load(EXAMPLE / "tiny_cnn_input.npy")
    kept = sess.run_all({"input": x})
    prog = sess.executable.program
    names = {prog["activations"][a]["name"] for st in prog["steps"] for a in st["outputs"]}
    assert names - set(kept) <= {"f"}  # the Flatten view is elided: it never runs
    (probs,) = sess.run(["probs"], {"input": x})
    np.testing.assert_array_equal(kept["probs"], probs)
    # kept copies, not arena views a later step overwrote
    assert kept["r1"].max() > 0 and not np.shares_memory(kept["r1"], sess.arena)


def test_metrics() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    m = metrics(a, a)
    assert m["cosine"] == pytest.approx(1.0) and m["max_abs"] == 0 and m["rmse"] == 0 and m["kl"] == 0
    m = metrics(a, a + [0, 0, 0, 1])
    assert m["max_abs"] == 1 and m["mean_abs"] == 0.25 and m["rmse"] == 0.5 and m["max_rel"] == 0.25
    assert metrics(a, -a)["cosine"] == pytest.approx(-1.0)
    assert metrics(np.zeros(3), np.zeros(3))["cosine"] == 1.0


def test_exit_codes(model, oms, tmp_path, capsys) -> None:
    x = EXAMPLE / "tiny_cnn_input.npy"
    assert compare([f"--om={oms['fp32']}"]) == 2
    assert compare([f"--model={oms['fp32']}", f"--om={oms['fp32']}", f"--input={x}", f"--output={tmp_path}"]) == 3
    assert compare([f"--model={model}", f"--om={model}", f"--input={x}", f"--output={tmp_path}"]) == 4
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 2, 8, 8), np.float32))
    assert compare([f"--model={model}", f"--om={oms['fp32']}", f"--input={bad}", f"--output={tmp_path}"]) == 5
    err = capsys.readouterr().err
    assert err.count("atcpy-compare: error:") == 4
