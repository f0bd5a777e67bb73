"""Every light model compiles for Ascend310P3, goes through a .om file, and its
outputs match onnxruntime and the expected outputs shipped beside it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler import compile_model
from runtime import Session
from tests.e2e.conftest import LIGHT_MODELS, light_expected, light_input, light_path


@pytest.fixture(scope="module", params=LIGHT_MODELS)
def compiled(request, tmp_path_factory):
    name = request.param
    model = onnx.load(light_path(name))
    exe = compile_model(model, soc_version="Ascend310P3")
    om = tmp_path_factory.mktemp(name) / f"{name}.om"
    exe.save(om)
    return name, model, exe, om


def test_light_model_matches_onnxruntime_and_expected(compiled) -> None:
    name, model, _exe, om = compiled
    feeds = light_input(model)
    got = Session(str(om)).run(None, feeds)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    want = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got[0], light_expected(name), rtol=1e-3, atol=1e-4)


def test_light_model_report_says_where_ops_run(compiled) -> None:
    _, _, exe, _ = compiled
    r = exe.report
    assert r["soc_version"] == "Ascend310P3"
    assert r["ops"]["total"] == sum(r["ops"]["by_engine"].values())
    assert r["memory"]["weights_bytes"] > 0
