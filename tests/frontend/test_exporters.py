"""Models from real exporters: a torch.onnx small transformer and skl2onnx MLPs."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch

from compiler.frontend import coverage, import_onnx, precheck
from ir import DType, TensorType, verify

nn = torch.nn


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 32, heads: int = 4, t: int = 16) -> None:
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.randn(t, d) * 0.02)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2, self.head = nn.Linear(d, 4 * d), nn.Linear(4 * d, d), nn.Linear(d, vocab)
        self.heads = heads
        self.register_buffer("mask", torch.tril(torch.ones(t, t)).bool())

    def forward(self, ids):
        b, t = ids.shape
        x = self.emb(ids) + self.pos[:t]
        q, k, v = self.qkv(self.ln1(x)).split(x.shape[-1], dim=-1)
        hd = x.shape[-1] // self.heads
        q, k, v = (z.view(b, t, self.heads, hd).transpose(1, 2) for z in (q, k, v))
        a = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        a = a.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(-1)
        x = x + self.proj((a @ v).transpose(1, 2).reshape(b, t, -1))
        return self.head(x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x)))))


@pytest.fixture(scope="module", params=[False, True], ids=["static", "dynamic_batch"])
def transformer(request, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tr") / "tiny_gpt.onnx"
    dyn = {"ids": {0: "batch"}, "logits": {0: "batch"}} if request.param else None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyGPT().eval(), (torch.randint(0, 50, (2, 16)),), str(path), dynamo=False,
                          input_names=["ids"], output_names=["logits"], opset_version=17, dynamic_axes=dyn)
    return path, request.param


def test_transformer_imports(transformer):
    path, dynamic = transformer
    g = import_onnx(path, strict=True)
    verify(g)
    batch = "batch" if dynamic else 2
    assert [v.name for v in g.inputs] == ["ids"] and g.inputs[0].type == TensorType(DType.i64, (batch, 16))
    assert [v.name for v in g.outputs] == ["logits"]
    assert g.outputs[0].type == TensorType(DType.f32, (batch, 16, 50))
    kinds = {op.kind for op in g.ops}
    assert {"LayerNormalization", "MatMul", "Softmax", "Erf", "Gather", "Where"} <= kinds
    assert coverage(path).opaque == {} and precheck(path) == []


def test_transformer_input_shape_override(transformer):
    path, dynamic = transformer
    n = 3 if dynamic else 2  # the static export bakes batch 2 into its Reshape shapes
    g = import_onnx(path, {"ids": [n, 16]}, strict=True)
    verify(g)
    assert g.outputs[0].type == TensorType(DType.f32, (n, 16, 50))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


def _to_onnx(est, x, **kw) -> onnx.ModelProto:
    import warnings

    from skl2onnx import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(est, x[:1], **kw)


def test_sklearn_mlp_classifier(digits):
    import warnings

    from sklearn.neural_network import MLPClassifier

    x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=20, random_state=0).fit(x, y)
    m = _to_onnx(clf, x, options={id(clf): {"zipmap": False}})
    g = import_onnx(m, strict=True)
    verify(g)
    assert [v.name for v in g.outputs] == ["label", "probabilities"]
    assert g.outputs[0].type.dtype is DType.i64 and g.outputs[0].type.rank == 1
    assert g.outputs[1].type.dtype is DType.f32 and g.outputs[1].type.shape[1] == 10
    assert g.count("MatMul") == 2 and g.count("ai.onnx.ml.ArrayFeatureExtractor") == 1
    # with the default ZipMap the output is a sequence of maps: reported, not crashed
    problems = precheck(_to_onnx(clf, x))
    assert len(problems) == 1 and problems[0].startswith("ai.onnx.ml.ZipMap") and "sequence" in problems[0]


def test_sklearn_mlp_regressor(digits):
    import warnings

    from sklearn.neural_network import MLPRegressor

    x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=20, random_state=0).fit(x, y.astype(np.float32))
    g = import_onnx(_to_onnx(reg, x), {"X": [8, 64]}, strict=True)
    verify(g)
    assert g.outputs[0].type == TensorType(DType.f32, (8, 1))
