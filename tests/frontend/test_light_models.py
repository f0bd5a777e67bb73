"""Every model-zoo light model shipped with onnx imports, verifies, has the right
output types and survives a print -> parse round trip."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.frontend import coverage, import_onnx, precheck
from ir import DType, TensorType, parse, print_graph, verify

LIGHT = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))


@pytest.fixture(scope="module", params=LIGHT, ids=[os.path.basename(p)[6:-5] for p in LIGHT])
def light(request):
    path = request.param
    return path, import_onnx(path, strict=True)


def test_light_models_exist():
    assert len(LIGHT) >= 9


def test_imports_and_verifies(light):
    path, g = light
    verify(g)
    assert g.attrs["opset"] == 9
    model = onnx.load(path, load_external_data=False)
    # exact ONNX names for inputs and outputs
    inits = {t.name for t in model.graph.initializer}
    assert [v.name for v in g.inputs] == [i.name for i in model.graph.input if i.name not in inits]
    assert [v.name for v in g.outputs] == [o.name for o in model.graph.output]
    # the output type matches the shipped expected output
    expected = numpy_helper.to_array(onnx.load_tensor(path[:-5] + "_output_0.pb"))
    assert g.outputs[0].type == TensorType(DType.f32, expected.shape)
    # initializers listed as inputs became constants
    assert not any(v.name in inits for v in g.inputs)
    assert g.count("const") > 0


def test_print_parse_round_trip(light):
    _, g = light
    res: dict[str, np.ndarray] = {}
    text = print_graph(g, res)
    g2 = parse(text, res)
    verify(g2)
    assert print_graph(g2) == text


def test_every_light_op_is_declared(light):
    path, g = light
    cov = coverage(path)
    assert not cov.opaque and not cov.unsupported, cov.summary()
    assert precheck(path) == []
    # no opaque ops in the IR either: every kind has a declaration
    from ir import lookup
    assert all(lookup(op.kind) is not None for op in g.ops)


def test_dropout_kept_as_identity_like():
    path = next(p for p in LIGHT if "alexnet" in p)
    g = import_onnx(path, strict=True)
    drops = [op for op in g.ops if op.kind == "Dropout"]
    assert drops and all(op.results[0].type == op.operands[0].type for op in drops)
