"""A fast slice of the ONNX node-case conformance suite through `AtcpyBackend`:
every case (`onnx.backend.test.case.node.collect_testcases`) whose first node is one
of `OPS` must pass — compile → .om bytes → runtime, compared with the case's expected
outputs at its own tolerances.  The whole suite is `bench/conformance.py`.

The op list is chosen by name (common ops across the engines, plus ops whose fixes
this guards: old-opset And/Or/Xor/Not through the version converter, empty-set
ReduceMax, ...), not by filtering on pass/fail at run time.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

OPS = (
    "Abs", "Add", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Pow", "Neg",
    "Gemm", "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "Softmax",
    "LogSoftmax", "Concat", "Reshape", "Transpose", "Flatten", "Unsqueeze", "Gather", "Slice",
    "Split", "Pad", "Clip", "LeakyRelu", "Where", "Equal", "Less", "ReduceSum", "ReduceMax",
    "ArgMax", "TopK", "LayerNormalization", "And", "Or", "Xor", "Not",
)


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [c for c in cases if c.kind == "node" and c.model.graph.node and c.model.graph.node[0].op_type in OPS]


CASES = _cases()


def _compare(got, want, rtol: float, atol: float) -> None:
    assert len(got) == len(want)
    for o, e in zip(got, want):
        o, e = np.asarray(o), np.asarray(e)
        assert o.shape == e.shape and o.dtype == e.dtype, (o.shape, o.dtype, e.shape, e.dtype)
        np.testing.assert_allclose(o, e, rtol=rtol, atol=atol, equal_nan=True)


def test_every_op_has_cases():
    assert {c.model.graph.node[0].op_type for c in CASES} == set(OPS)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case):
    from compiler.onnx_backend import AtcpyBackend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = AtcpyBackend.prepare(case.model)
        for inputs, expected in case.data_sets:
            _compare(rep.run(list(inputs)), list(expected), case.rtol, case.atol)
