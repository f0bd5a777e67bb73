"""The rewriter and its worklist driver: a fixed point, `changed` told right,
users revisited, untouched ops left alone, and the same result as the full
sweeps it replaced on every canonicalize and fuse test case."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ir.core import Graph, Op
from ir.parser import parse
from ir.printer import print_graph
from ir.types import DType, TensorType
from passes import PassContext
from passes._rewrite import Rewriter, apply_rules, refresh_types, rewrite
from passes.base import PassError
from passes.canonicalize import RULES as CANONICALIZE
from passes.fuse import RULES as FUSE

T = TensorType(DType.f32, (2,))


def _forward_neg_neg(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
    """Neg(Neg(x)) ==> x."""
    inner = op.operands[0].producer
    if inner is None or inner.kind != "Neg":
        return False
    rw.replace_op(op, [inner.operands[0]], inherit_names=True)
    return True


def _chain(kinds: list[str]) -> Graph:
    g = Graph()
    v = g.add_input("x", T)
    for k in kinds:
        v = g.add_op(k, [v]).result
    g.outputs.append(v)
    return g


def test_reaches_a_fixed_point_and_says_so():
    g = _chain(["Neg"] * 6 + ["Abs"])
    assert rewrite(g, {"Neg": [_forward_neg_neg]}, PassContext())
    assert [op.kind for op in g.ops] == ["Abs"]
    assert not rewrite(g, {"Neg": [_forward_neg_neg]}, PassContext())  # nothing left to do


def test_a_rule_that_builds_and_undoes_reports_no_change():
    def tries(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
        rw.erase(rw.add_op("Exp", [op.result], before=None))
        return False

    g = _chain(["Abs"])
    rw = Rewriter(g)
    assert not rewrite(g, {"Abs": [tries]}, PassContext(), rewriter=rw)
    assert not rw.changed and [op.kind for op in g.ops] == ["Abs"]


def test_dead_ops_are_erased_and_count_as_a_change():
    g = _chain(["Abs"])
    g.add_op("Exp", [g.inputs[0]])  # nobody reads it
    assert rewrite(g, {}, PassContext())
    assert [op.kind for op in g.ops] == ["Abs"]


def test_users_of_a_changed_value_are_revisited():
    """Relu's rule wants %e to have one user; that happens only when the later
    Neg is rewritten, after Relu's turn in the first round."""
    g = Graph()
    x = g.add_input("x", T)
    e = g.add_op("Exp", [x]).result
    relu = g.add_op("Relu", [e])
    neg = g.add_op("Neg", [e])
    g.outputs = [relu.result, neg.result]
    visits: list[str] = []

    def relu_alone(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
        visits.append("Relu")
        if not rw.single_use(op.operands[0]):
            return False
        rw.replace_op(op, [rw.add_op("Sigmoid", list(op.operands), before=op).result], inherit_names=True)
        return True

    def neg_off_exp(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
        if op.operands[0].producer is None or op.operands[0].producer.kind != "Exp":
            return False
        rw.replace_op(op, [rw.add_op("Neg", [x], before=op).result], inherit_names=True)
        return True

    assert rewrite(g, {"Relu": [relu_alone], "Neg": [neg_off_exp]}, PassContext())
    assert [op.kind for op in g.ops] == ["Exp", "Sigmoid", "Neg"]
    assert visits == ["Relu", "Relu"]


def test_later_rounds_visit_only_touched_ops():
    g = _chain(["Abs"] * 50 + ["Neg", "Neg"] + ["Abs"] * 50)
    seen: list[Op] = []

    def count(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
        seen.append(op)
        return False

    assert rewrite(g, {"Neg": [_forward_neg_neg], "*": [count]}, PassContext())
    first_round = 101  # every op but the Neg the rule removed
    assert len(g.ops) == 100 and len(seen) - first_round <= 4


def test_given_up_rules_are_not_tried_again():
    calls: list[Op] = []

    def hopeless(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
        calls.append(op)
        rw.give_up(op, hopeless)
        return False

    g = _chain(["Abs", "Neg", "Neg"])
    rw = Rewriter(g)
    rewrite(g, {"Neg": [_forward_neg_neg], "Abs": [hopeless]}, PassContext(), rewriter=rw)
    rewrite(g, {"Abs": [hopeless]}, PassContext(), rewriter=rw)
    assert len(calls) == 1


def test_rules_that_undo_each_other_are_reported():
    def flip(to: str):
        def rule(rw: Rewriter, op: Op, ctx: PassContext) -> bool:
            rw.replace_op(op, [rw.add_op(to, list(op.operands), before=op).result], inherit_names=True)
            return True
        return rule

    g = _chain(["Abs"])
    with pytest.raises(PassError, match="fixed point"):
        rewrite(g, {"Abs": [flip("Neg")], "Neg": [flip("Abs")]}, PassContext())


def test_rules_on_the_graph_run_through_the_same_driver():
    def neg_neg(graph: Graph, op: Op, ctx: PassContext) -> bool:
        inner = op.operands[0].producer
        if inner is None or inner.kind != "Neg":
            return False
        graph.replace_op(op, [inner.operands[0]])
        return True

    g = _chain(["Abs", "Neg", "Neg", "Exp"])
    assert apply_rules(g, {"Neg": [neg_neg]}, PassContext())
    assert [op.kind for op in g.ops] == ["Abs", "Exp"] and g.listener is None


# -- the worklist driver against the full sweeps it replaced ------------------------------------
def _sweeps(graph: Graph, table, ctx: PassContext, rw: Rewriter) -> bool:
    """The driver before: every live op, in order, every round."""
    changed = False
    for _ in range(64):
        fired = False
        for op in list(graph.ops):
            if op.graph is graph:
                for rule in (*table.get(op.kind, ()), *table.get("*", ())):
                    if (op, rule) not in rw._given_up and rule(rw, op, ctx):
                        fired = True
                        break
        fired |= graph.erase_dead() > 0
        if not fired:
            return changed
        changed = True
    raise AssertionError("no fixed point")


def _canonicalize(graph: Graph, driver) -> PassContext:
    ctx, rw = PassContext(), Rewriter(graph)
    for _ in range(16):
        if not (driver(graph, CANONICALIZE, ctx, rw) | refresh_types(graph)):
            break
    driver(graph, FUSE, ctx, Rewriter(graph))
    return ctx


def _worklist(graph: Graph, table, ctx: PassContext, rw: Rewriter) -> bool:
    return rewrite(graph, table, ctx, rewriter=rw)


PASS_TESTS = Path(__file__).parent
CASES = [(p, i, text) for p in sorted([*PASS_TESTS.glob("canonicalize/*.ir"), *PASS_TESTS.glob("fuse/*.ir")])
         for i, text in enumerate(re.split(r"(?m)^\s*//\s*-----\s*$", p.read_text())) if "graph @" in text]


@pytest.mark.parametrize("path,i,text", CASES, ids=[f"{p.parent.name}/{p.name}:{i}" for p, i, _ in CASES])
def test_same_result_as_full_sweeps(path, i, text):
    before, after = parse(text, synthesize=True), parse(text, synthesize=True)
    want = _canonicalize(before, _sweeps)
    got = _canonicalize(after, _worklist)
    assert print_graph(after) == print_graph(before)
    assert got.stats == want.stats


def test_same_result_as_full_sweeps_on_a_resnet_block():
    """A bigger graph: BN after Conv, scale layers, a residual Add, Relu, Gemm."""
    rng = np.random.default_rng(0)

    def build() -> Graph:
        g = Graph()
        x = g.add_input("x", TensorType(DType.f32, (1, 4, 6, 6)))
        v = x
        for i in range(3):
            w = g.const(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), f"w{i}")
            c = g.add_op("Conv", [v, w], {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}).result
            stats = [g.const(rng.random(4).astype(np.float32) + 0.5, f"bn{i}_{k}") for k in range(4)]
            b = g.add_op("BatchNormalization", [c, *stats]).result
            s = g.const(rng.random((4, 1, 1)).astype(np.float32) + 0.5, f"s{i}")
            m = g.add_op("Mul", [b, s]).result
            r = g.add_op("Relu", [g.add_op("Add", [m, v]).result]).result
            v = g.add_op("Identity", [r]).result
        flat = g.add_op("Flatten", [v]).result
        wg = g.const(rng.standard_normal((10, 144)).astype(np.float32), "wg")
        bg = g.const(rng.standard_normal(10).astype(np.float32), "bg")
        y = g.add_op("Gemm", [flat, wg, bg], {"transB": 1}).result
        g.outputs.append(g.add_op("Relu", [y]).result)
        return g

    state = rng.bit_generator.state
    before = build()
    rng.bit_generator.state = state
    after = build()
    want, got = _canonicalize(before, _sweeps), _canonicalize(after, _worklist)
    assert print_graph(after) == print_graph(before)
    assert got.stats == want.stats and got.stats["canonicalize"]["bn_into_conv"] == 3
