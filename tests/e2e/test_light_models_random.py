"""The light models' graphs with real-valued (seeded random) weights: fp32
matches onnxruntime tightly, force_fp16 within fp16 tolerance, and the compile
report says where every op runs on two SoCs.  (The shipped weights are one
constant per tensor: see `with_random_weights`.)"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler import compile_model
from runtime import Session
from tests.e2e.conftest import LIGHT_MODELS, light_input, light_path, with_random_weights


@pytest.fixture(scope="module", params=LIGHT_MODELS)
def case(request):
    model = with_random_weights(onnx.load(light_path(request.param)))
    feeds = light_input(model)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    want = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    return request.param, model, feeds, want


def test_fp32_matches_onnxruntime(case) -> None:
    _, model, feeds, want = case
    got = Session(compile_model(model).to_bytes()).run(None, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)


def test_force_fp16_within_fp16_tolerance(case) -> None:
    _, model, feeds, want = case
    exe = compile_model(model, precision_mode="force_fp16")
    assert exe.report["precision_mode"] == "force_fp16"
    got = Session(exe.to_bytes()).run(None, feeds)
    for g, w in zip(got, want):
        g = g.astype(np.float32)
        assert np.isfinite(g).all()
        cos = float((g * w).sum() / (np.linalg.norm(g) * np.linalg.norm(w)))
        assert cos >= 0.9999
        assert np.abs(g - w).max() <= 1e-2 * np.abs(w).max()


def test_report_engines_fallbacks_and_latency_per_soc(case) -> None:
    name, model, _, _ = case
    reports = {soc: compile_model(model, soc_version=soc).report for soc in ("Ascend310P3", "Ascend910B")}
    for soc, r in reports.items():
        assert r["soc_version"] == soc
        engines = r["ops"]["by_engine"]
        assert set(engines) >= {"cube", "vector", "aicpu"}
        assert sum(engines.values()) == r["ops"]["total"]
        assert engines["cube"] > 0, f"{name}: no op on the Cube"
        assert len(r["fallbacks"]) == engines["aicpu"]
        assert all(f["reason"] for f in r["fallbacks"])
        assert r["estimated_latency_ms"] > 0
    # the 910B has more AI cores, a faster clock and HBM: the same model must estimate faster
    assert reports["Ascend910B"]["estimated_latency_ms"] < reports["Ascend310P3"]["estimated_latency_ms"]
