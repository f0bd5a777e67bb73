"""Every light model compiles for Ascend310P3, goes through a .om file, and its
outputs match onnxruntime and the expected outputs shipped beside it; the
compile report says where every op runs, on two SoCs.

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

Compiles and onnxruntime references come from `tests._light` (once per session).
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime import Session
from tests.e2e.conftest import (
    LIGHT_MODELS,
    SHIPPED_AICPU_FALLBACKS,
    SOCS,
    assert_engines,
    light_compile,
    light_expected,
    light_input,
    light_model,
    light_reference,
)


@pytest.fixture(scope="module", params=LIGHT_MODELS)
def compiled(request, tmp_path_factory):
    name = request.param
    exe = light_compile(name, soc_version="Ascend310P3")
    om = tmp_path_factory.mktemp(name) / f"{name}.om"
    exe.save(om)
    return name, light_model(name), exe, om


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_light_model_matches_onnxruntime_and_expected(compiled) -> None:
    name, model, _exe, om = compiled
    feeds = light_input(model)
    got = Session(str(om)).run(None, feeds)
    probe = light_model(name, logits=True)
    # one onnxruntime session per model: the probe's outputs are the model's, then the logits
    want = light_reference(name, logits=probe is not None)
    if probe is not None:
        want, want_logits = want[:-1], want[-1]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
    if probe is None:
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got[0], light_expected(name), rtol=1e-3, atol=1e-4)
        return
    got_logits = Session(light_compile(name, logits=True)).run(None, feeds)[-1]
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    ulp = float(np.spacing(np.abs(want_logits).max().astype(np.float32)))
    if ulp <= 1e-4:  # well conditioned: the outputs themselves agree
        np.testing.assert_allclose(got[0], want[0], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got[0], light_expected(name), rtol=1e-3, atol=1e-4)
    else:  # decided by rounding: atcpy's output is the Softmax of its own logits
        np.testing.assert_allclose(got[0], _softmax(got_logits, axis=1).astype(np.float32), rtol=1e-3, atol=1e-4)


def test_report_engines_fallbacks_and_latency_per_soc(compiled) -> None:
    """Each op runs on exactly the engine it must (Cube kinds on the Cube, the
    rest on the Vector unit, ConstantOfShape on the AICPU where the SoC has no
    Vector kernel for it), the report counts exactly that, and the 910B
    estimates faster."""
    name, _, exe, _ = compiled
    reports = {}
    for soc in SOCS:
        e = exe if soc == "Ascend310P3" else light_compile(name, soc_version=soc)
        fallbacks = SHIPPED_AICPU_FALLBACKS.get(name, 0) if soc == "Ascend310P3" else 0
        assert_engines(e, soc, aicpu_fallbacks=fallbacks)
        r = reports[soc] = e.report
        assert r["memory"]["weights_bytes"] > 0
        assert r["estimated_latency_ms"] > 0
    # the 910B has more AI cores, a faster clock and HBM: the same model must estimate faster
    assert reports["Ascend910B"]["estimated_latency_ms"] < reports["Ascend310P3"]["estimated_latency_ms"]
