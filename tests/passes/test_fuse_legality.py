"""Fusion legality: the cycle check and the single-use rule, on graphs built in Python."""

from __future__ import annotations

import numpy as np

from ir.core import Graph
from ir.types import DType, TensorType
from passes import PassContext
from passes.fuse import Fuse, creates_cycle


def _graph():
    g = Graph("g")
    x = g.add_input("x", TensorType(DType.f32, (2, 4)))
    w = g.const(np.ones((4, 4), np.float32), "w")
    mm = g.add_op("MatMul", [x, w])
    e = g.add_op("Exp", [mm.result])
    return g, x, w, mm, e


def test_cycle_when_extra_operand_depends_on_the_head():
    g, x, w, mm, e = _graph()
    assert creates_cycle(g, mm, [e.result])  # Exp reads the MatMul: a fused op reading Exp would precede it
    assert not creates_cycle(g, mm, [x, w, None])  # inputs and constants depend on nothing
    other = g.add_op("Neg", [x])
    assert not creates_cycle(g, mm, [other.result])  # a sibling path does not go through the head


def test_no_fusion_through_a_non_constant_addend():
    g, _x, _w, mm, e = _graph()
    add = g.add_op("Add", [mm.result, e.result])  # MatMul has two users and the addend is not a bias
    g.outputs = [g.add_op("Relu", [add.result]).result]
    ctx = PassContext()
    assert not Fuse().run(g, ctx)
    assert g.count("MatMul") == 1 and g.count("Relu") == 1 and not ctx.stats
