"""Every light model compiles for Ascend310P3, goes through a .om file, and its
outputs match onnxruntime and the expected outputs shipped beside it.

The light models build every weight with ConstantOfShape (one value per
tensor), so on the shipped input most of them feed their Softmax logits of
1e9..1e31 that are all equal in exact arithmetic.  One float32 ulp of such a
logit is 1e3..1e24, so the Softmax output is decided by rounding: an engine
whose BLAS sums one class's dot product in a different order than another's
(OpenBLAS does, by row position) gets a one-hot-ish output where onnxruntime
gets a uniform one.  Matching those outputs is luck, not a check of the
compiler.  So the Softmax's input is compared too (it is well conditioned),
and where one ulp of the largest logit moves the Softmax by more than the
tolerance, the output is checked to be the Softmax of atcpy's own logits
instead of onnxruntime's.  ``test_light_models_random.py`` runs the same graphs
with real-valued weights, where every output is compared.
"""

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


def _with_logits_output(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy whose last Softmax's input is also a graph output (None: no Softmax)."""
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    if not softmax:
        return None
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(softmax[-1].input[0]))
    return m


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


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
    probe = _with_logits_output(model)
    if probe is None:
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got[0], light_expected(name), rtol=1e-3, atol=1e-4)
        return
    got_logits = Session(compile_model(probe, soc_version="Ascend310P3")).run(None, feeds)[-1]
    want_logits = ort.InferenceSession(probe.SerializeToString(), so,
                                       providers=["CPUExecutionProvider"]).run(None, feeds)[-1]
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    ulp = float(np.spacing(np.abs(want_logits).max().astype(np.float32)))
    if ulp <= 1e-4:  # well conditioned: the outputs themselves agree
        np.testing.assert_allclose(got[0], want[0], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got[0], light_expected(name), rtol=1e-3, atol=1e-4)
    else:  # decided by rounding: atcpy's output is the Softmax of its own logits
        np.testing.assert_allclose(got[0], _softmax(got_logits, axis=1).astype(np.float32), rtol=1e-3, atol=1e-4)


def test_light_model_report_says_where_ops_run(compiled) -> None:
    _, _, exe, _ = compiled
    r = exe.report
    assert r["soc_version"] == "Ascend310P3"
    assert r["ops"]["total"] == sum(r["ops"]["by_engine"].values())
    assert r["memory"]["weights_bytes"] > 0
