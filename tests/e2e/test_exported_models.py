"""Models exported by torch.onnx.export and skl2onnx compile and match onnxruntime."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from compiler import compile_model
from runtime import Session


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _atcpy(model: onnx.ModelProto, feeds: dict, **opts) -> tuple[list[np.ndarray], object]:
    exe = compile_model(model, soc_version="Ascend310P3", **opts)
    return Session(exe.to_bytes()).run(None, feeds), exe


@pytest.fixture(scope="module")
def transformer() -> onnx.ModelProto:
    import torch  # a test-only tool, installed by .ci/run

    nn = torch.nn
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, d: int = 32, heads: int = 4, t: int = 8, vocab: int = 50) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(t, d) * 0.1)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            self.head = nn.Linear(d, vocab)
            self.register_buffer("mask", torch.triu(torch.full((t, t), float("-inf")), 1))

        def forward(self, ids):
            x = self.emb(ids) + self.pos
            h = self.ln1(x)
            a, _ = self.attn(h, h, h, attn_mask=self.mask, need_weights=False)
            x = x + a
            x = x + self.mlp(self.ln2(x))
            return self.head(x)

    f = io.BytesIO()
    torch.onnx.export(Block().eval(), (torch.zeros(2, 8, dtype=torch.long),), f, dynamo=False,
                      input_names=["ids"], output_names=["logits"], opset_version=17)
    return onnx.load_from_string(f.getvalue())


def test_small_transformer_matches_onnxruntime(transformer) -> None:
    ids = np.random.default_rng(0).integers(0, 50, (2, 8)).astype(np.int64)
    got, exe = _atcpy(transformer, {"ids": ids})
    want = _ort(transformer, {"ids": ids})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-3, atol=1e-4)
    # shape arithmetic from the exporter folds away: no Shape op survives to run time
    assert "Shape" not in exe.report["ops"]["by_kind"]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return x, d.target


def test_skl2onnx_mlp_regressor(digits) -> None:
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor

    x, y = digits
    reg = MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=60, random_state=0).fit(x[:600], y[:600])
    model = to_onnx(reg, x[:1], target_opset=17)
    feeds = {model.graph.input[0].name: x[600:632]}
    got, _ = _atcpy(model, feeds, input_shapes={model.graph.input[0].name: [32, 64]})
    np.testing.assert_allclose(got[0], _ort(model, feeds)[0], rtol=1e-3, atol=1e-4)


def test_skl2onnx_mlp_classifier_labels_and_probabilities(digits) -> None:
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x, y = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=80, random_state=0).fit(x[:600], y[:600])
    model = to_onnx(clf, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}, options={"zipmap": False})
    name = model.graph.input[0].name
    feeds = {name: x[600:664]}
    got, _exe = _atcpy(model, feeds, input_shapes={name: [64, 64]})
    want = _ort(model, feeds)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-3, atol=1e-5)
    assert (got[0] == clf.predict(x[600:664])).mean() == 1.0
