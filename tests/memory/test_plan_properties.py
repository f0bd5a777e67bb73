"""Laws of the memory plan, on random graphs: values live at the same step never
share bytes unless the plan aliases them on purpose (views, in-place, operands
inside their Concat), no value is
overwritten while it is still needed, and running the graph inside its arena gives
exactly the outputs of running it without one."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ir import print_graph, verify
from ir.core import Graph
from passes import PassContext
from passes.assign_buffers import AssignBuffers
from tests.memory.randgraph import alias_groups, concat_slices, graphs, live_ranges, run_in_arena, run_reference

OPTIONS = st.builds(
    AssignBuffers,
    alignment=st.sampled_from([1, 4, 32, 64]),
    inplace=st.booleans(),
    views=st.booleans(),
    concat=st.booleans(),
    search=st.sampled_from([0, 200]),
)


def plan(g: Graph, p: AssignBuffers | None = None) -> Graph:
    (p or AssignBuffers()).run(g, PassContext())
    verify(g)
    return g


def planned(g: Graph) -> list[tuple[int, int, int, int, int]]:
    """(value id, offset, nbytes, first step, last step) for every planned value."""
    live = live_ranges(g)
    return [
        (id(r), o, r.type.nbytes, *live[id(r)])
        for op in g.ops
        for r, o in zip(op.results, op.attrs.get("offsets", ()))
        if o >= 0
    ]


@settings(max_examples=50, deadline=None)
@given(graphs(), OPTIONS)
def test_values_live_together_do_not_overlap(g: Graph, p: AssignBuffers) -> None:
    plan(g, p)
    group = alias_groups(g)
    vals = planned(g)
    for i, (a, oa, na, sa, ea) in enumerate(vals):
        for b, ob, nb, sb, eb in vals[i + 1 :]:
            live_together = sa <= eb and sb <= ea
            bytes_overlap = oa < ob + nb and ob < oa + na
            if live_together and bytes_overlap:
                assert group[a] == group[b], print_graph(g)


def written(op, offset: int, nbytes: int) -> list[tuple[int, int]]:
    """The byte ranges `op` writes: a Concat skips operands already in their slices."""
    slices = concat_slices(op) if op.kind == "Concat" else []
    if not slices:
        return [(offset, nbytes)]
    return [(pos, n) for v, pos, n in slices if _offset(v) != pos]


def _offset(v) -> int:
    p = v.producer
    if p is None or p.kind == "const":
        return -1
    return p.attrs["offsets"][p.results.index(v)]


@settings(max_examples=50, deadline=None)
@given(graphs(), OPTIONS)
def test_no_value_is_overwritten_while_needed(g: Graph, p: AssignBuffers) -> None:
    """A write over a value's bytes comes after its last use — or at it, by an
    in-place op that reads that value as an operand of the result's type."""
    plan(g, p)
    live = live_ranges(g)
    by_id = {id(r): r for op in g.ops for r in op.results}
    vals = planned(g)
    for a, oa, na, sa, ea in vals:
        for b, ob, nb, sb, _ in vals:
            writer = by_id[b].producer
            # a view at its operand's offset writes nothing (a may hold those bytes as a concat slice)
            if sb <= sa or writer.kind in ("Reshape", "Flatten", "Squeeze", "Unsqueeze") \
                    and ob == _offset(writer.operands[0]):
                continue
            if not any(oa < o + n and o < oa + na for o, n in written(writer, ob, nb)):
                continue
            assert ea <= sb, print_graph(g)
            if ea == sb:
                assert writer.attrs.get("inplace") == 1, print_graph(g)
                assert any(v is by_id[a] for v in writer.operands), print_graph(g)
                assert by_id[a].type == by_id[b].type, print_graph(g)
    assert live  # the graph has activations to plan


@settings(max_examples=50, deadline=None)
@given(graphs(), OPTIONS)
def test_running_in_the_arena_gives_the_same_outputs(g: Graph, p: AssignBuffers) -> None:
    want = run_reference(g)
    got = run_in_arena(plan(g, p))
    assert len(got) == len(want)
    for w, o in zip(want, got):
        np.testing.assert_array_equal(o, w)


@settings(max_examples=50, deadline=None)
@given(graphs(), OPTIONS)
def test_arena_bounds_and_alignment(g: Graph, p: AssignBuffers) -> None:
    plan(g, p)
    arena, lb, naive = (g.attrs[k] for k in ("arena_bytes", "lower_bound_bytes", "naive_bytes"))
    vals = planned(g)
    assert lb <= arena <= naive
    for _, o, n, _, _ in vals:
        assert o % p.alignment == 0
        assert o + n <= arena
    # the lower bound is at least the biggest single buffer, and the arena ends
    # exactly at the end of its topmost buffer
    sizes = [(o, -(-n // p.alignment) * p.alignment) for _, o, n, _, _ in vals]
    assert lb >= max((s for _, s in sizes), default=0)
    assert arena == max((o + s for o, s in sizes), default=0)


@settings(max_examples=25, deadline=None)
@given(graphs())
def test_planning_twice_changes_nothing(g: Graph) -> None:
    plan(g)
    first = print_graph(g)
    assert AssignBuffers().run(g, PassContext()) is False
    assert print_graph(g) == first


@settings(max_examples=25, deadline=None)
@given(graphs())
def test_graph_inputs_and_constants_are_never_planned(g: Graph) -> None:
    plan(g)
    assert all("offsets" not in op.attrs for op in g.ops if op.kind == "const")
    # nothing an input feeds is aliased to it: an op on an input gets its own bytes
    for op in g.ops:
        if any(v in g.inputs for v in op.operands):
            assert not op.attrs.get("inplace") or any(
                v not in g.inputs and v.type == op.result.type for v in op.operands if v is not None
            )
