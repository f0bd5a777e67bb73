"""The verifier accepts well-formed graphs and names what is wrong with broken ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ir import DType, Graph, TensorType, VerifyError, parse, verify
from ir.core import Op


def mlp() -> Graph:
    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.f32, (4, 8)))
    w = g.const(np.ones((8, 3), np.float32), name="w")
    b = g.const(np.ones((3,), np.float32), name="b")
    y = g.add_op("MatMul", [x, w]).result
    z = g.add_op("Add", [y, b]).result
    g.outputs = [g.add_op("Relu", [z]).result]
    return g


def test_well_formed_graph_verifies() -> None:
    verify(mlp())


def test_use_before_def_is_caught() -> None:
    g = mlp()
    g.ops.reverse()
    with pytest.raises(VerifyError, match="used before it is defined"):
        verify(g)


def test_wrong_result_type_is_caught() -> None:
    g = mlp()
    g.ops[-1].results[0].type = TensorType(DType.f32, (4, 4))
    with pytest.raises(VerifyError, match="differ from inferred"):
        verify(g)


def test_operand_count_and_attributes_are_checked() -> None:
    text = """graph @g(%x: tensor<2xf32>) -> (tensor<2xf32>) {
  %y = Relu(%x, %x) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  %z = Softmax(%x) {axis = "one", bogus = 1} : (tensor<2xf32>) -> tensor<2xf32>
  return %y
}"""
    with pytest.raises(VerifyError) as e:
        verify(parse(text))
    msg = str(e.value)
    assert "2 operands, expected 1" in msg
    assert "axis" in msg and "unknown attribute 'bogus'" in msg


def test_broken_use_list_is_caught() -> None:
    g = mlp()
    g.ops[-1].operands[0].uses.clear()
    with pytest.raises(VerifyError, match="missing from its use list"):
        verify(g)


def test_duplicate_names_and_undefined_outputs() -> None:
    g = mlp()
    g.ops[-1].results[0].name = g.ops[-2].results[0].name
    g.outputs.append(Op("Relu", [], [TensorType(DType.f32, (1,))]).results[0])
    with pytest.raises(VerifyError) as e:
        verify(g)
    assert "defined twice" in str(e.value) and "is not defined" in str(e.value)


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(5)))
def test_any_order_that_is_not_topological_fails(perm) -> None:
    g = mlp()
    ops = list(g.ops)
    g.ops = [ops[i] for i in perm]
    pos = {id(op): i for i, op in enumerate(g.ops)}
    topological = all(
        pos[id(v.producer)] < pos[id(op)] for op in g.ops for v in op.operands if v is not None and v.producer
    )
    if topological:
        verify(g)
    else:
        with pytest.raises(VerifyError):
            verify(g)
