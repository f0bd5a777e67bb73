"""Graph edits: the op list is a linked list with order keys, so insert and
erase are O(1); these tests hold it to a plain Python list, and check that
use-def links, names and the listener stay consistent."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ir.core import Graph, Op, OpList
from ir.types import DType, TensorType
from ir.verifier import verify

T = TensorType(DType.f32, (2,))


def _op(i: int) -> Op:
    return Op("Neg", [], [T], result_names=[f"v{i}"])


# one edit: (what, index into the current list, ...); indexes are taken modulo the length
EDITS = st.lists(st.tuples(st.sampled_from(["append", "before", "after", "erase"]), st.integers(0, 1000)),
                 max_size=120)


@settings(max_examples=200, deadline=None)
@given(EDITS)
def test_op_list_matches_a_plain_list(edits):
    ops, model = OpList(), []
    for n, (what, i) in enumerate(edits):
        if what == "append" or not model:
            op = _op(n)
            ops.insert(op)
            model.append(op)
        elif what == "erase":
            op = model.pop(i % len(model))
            ops.remove(op)
        else:
            at = model[i % len(model)]
            op = _op(n)
            ops.insert(op, before=at) if what == "before" else ops.insert(op, after=at)
            model.insert(model.index(at) + (what == "after"), op)
        assert len(ops) == len(model)
    assert list(ops) == model
    assert list(reversed(ops)) == model[::-1]
    assert [ops[i] for i in range(len(model))] == model
    assert [ops[-i - 1] for i in range(len(model))] == model[::-1]
    assert ops.first is (model[0] if model else None) and ops.last is (model[-1] if model else None)
    keys = [ops.key(op) for op in model]
    assert keys == sorted(set(keys))  # strictly increasing along the list
    assert all(op in ops for op in model)


def test_many_inserts_at_one_place_renumber_and_keep_order():
    ops = OpList([_op(0), _op(1)])
    end = ops.last
    model = [ops.first]
    for i in range(2, 200):  # far more than the key gap allows: keys are renumbered
        op = _op(i)
        ops.insert(op, before=end)
        model.append(op)
    model.append(end)
    assert list(ops) == model
    assert all(ops.comes_before(a, b) for a, b in itertools.pairwise(model))


def test_iteration_survives_erasing_the_current_op_and_sees_ops_inserted_ahead():
    ops = OpList([_op(i) for i in range(5)])
    seen = []
    for op in ops:
        seen.append(op.results[0].name)
        if op.results[0].name == "v1":
            ops.remove(op)
            ops.insert(_op(9), after=ops[-1])
    assert seen == ["v0", "v1", "v2", "v3", "v4", "v9"]


def test_reorder_by_assignment_and_reverse():
    g = Graph()
    x = g.add_input("x", T)
    a = g.add_op("Neg", [x])
    b = g.add_op("Abs", [x])
    g.ops = [b, a]
    assert list(g.ops) == [b, a]
    g.ops.reverse()
    assert list(g.ops) == [a, b]
    g.insert(Op("Exp", [x], [T]), before=b)
    assert [op.kind for op in g.ops] == ["Neg", "Exp", "Abs"]


def _chain() -> tuple[Graph, list[Op]]:
    g = Graph()
    x = g.add_input("x", T)
    v, chain = x, []
    for kind in ("Neg", "Abs", "Exp"):
        chain.append(g.add_op(kind, [v], names=[kind.lower()]))
        v = chain[-1].result
    g.outputs.append(v)
    return g, chain


def test_erase_and_insert_keep_use_def_and_names():
    g, (neg, ab, ex) = _chain()
    new = g.add_op("Relu", [neg.result], names=["abs"], before=ab)  # "abs" is taken: a fresh name
    assert new.result.name != "abs" and g.has_name(new.result.name)
    g.replace_op(ab, [new.result])
    assert not g.has_name("abs") and ab.graph is None and ab.operands == []
    assert [u.op for u in neg.result.uses] == [new] and ex.operands == [new.result]
    g.rename(new.result, "abs")  # free again
    assert new.result.name == "abs"
    verify(g)
    assert [op.kind for op in g.ops] == ["Neg", "Relu", "Exp"]


def test_rename_to_a_taken_name_picks_a_fresh_one_and_frees_the_old():
    g, (neg, ab, _ex) = _chain()
    g.rename(neg.result, "abs")
    assert neg.result.name not in ("abs", "neg") and neg.result.name.startswith("abs")
    assert not g.has_name("neg") and g.has_name(neg.result.name)
    g.rename(ab.result, "neg")
    assert ab.result.name == "neg"
    verify(g)


def test_const_goes_first():
    g, (neg, _ab, _ex) = _chain()
    c = g.const(np.ones(2, np.float32), "c")
    assert g.ops.first is c.producer and g.ops[1] is neg


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def op_inserted(self, op):
        self.events.append(("insert", op.kind))

    def op_erased(self, op):
        self.events.append(("erase", op.kind, op.graph is None, len(op.operands)))

    def operand_changed(self, op, old, new):
        self.events.append(("operand", op.kind, old and old.name, new and new.name))

    def output_replaced(self, old, new):
        self.events.append(("output", old.name, new.name))


def test_listener_hears_every_edit():
    g, (neg, ab, ex) = _chain()
    g.listener = rec = _Recorder()
    relu = g.add_op("Relu", [neg.result], names=["r"], before=ab)
    g.replace_op(ab, [relu.result])
    g.replace_value(ex.result, relu.result)
    assert rec.events == [
        ("insert", "Relu"),
        ("operand", "Exp", "abs", "r"),
        ("erase", "Abs", True, 1),  # out of the graph, operands still held
        ("output", "exp", "r"),
    ]
