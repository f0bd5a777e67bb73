"""End to end through codegen and the runtime: a program compiled with the
memory plan gives exactly the outputs of the same program compiled without it
(every value in its own region), for random graphs and for real models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings

from codegen import build_executable
from compiler.driver import compile_model
from ir.core import Graph
from passes import PassContext
from passes.assign_buffers import AssignBuffers
from runtime.session import Session
from tests.memory.randgraph import graphs

LIGHT = onnx.__path__[0] + "/backend/test/data/light"


def feeds_for(g: Graph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {v.name: rng.standard_normal(v.type.shape).astype(v.type.dtype.numpy) for v in g.inputs}


@settings(max_examples=25, deadline=None)
@given(graphs())
def test_random_graph_same_outputs_with_and_without_plan(g: Graph) -> None:
    feeds = feeds_for(g)
    plain = Session(build_executable(g.clone())).run(None, feeds)
    AssignBuffers().run(g, PassContext())
    exe = build_executable(g)
    assert exe.header["memory"]["arena_bytes"] == g.attrs["arena_bytes"]
    sess = Session(exe)
    for _ in range(2):  # a second run reuses the same arena
        planned = sess.run(None, feeds)
        assert len(planned) == len(plain)
        for a, b in zip(plain, planned):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("model", ["squeezenet", "inception_v1"])
def test_light_model_same_outputs_with_and_without_plan(model: str) -> None:
    path = f"{LIGHT}/light_{model}.onnx"
    on = compile_model(path, passes="canonicalize,fuse,assign-buffers")
    off = compile_model(path, passes="canonicalize,fuse")
    assert on.header["memory"]["arena_bytes"] < off.header["memory"]["arena_bytes"]
    s_on, s_off = Session(on), Session(off)
    (inp,) = s_on.get_inputs()
    feeds = {inp.name: np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)}
    want, got = s_off.run(None, feeds), s_on.run(None, feeds)
    assert len(want) == len(got) == 1
    np.testing.assert_array_equal(want[0], got[0])


def test_densenet_concats_are_produced_in_place() -> None:
    """DenseNet's 58 Concats: with concat aliasing every operand is produced in
    its slice, so the session drops the steps; the outputs are the same bits as
    with copying concats."""
    path = f"{LIGHT}/light_densenet121.onnx"
    on = compile_model(path, passes="canonicalize,fuse,assign-buffers")
    off = compile_model(path, passes="canonicalize,fuse,assign-buffers{concat=false}")
    n_concat = sum(st["kernel"] == "Concat" for st in on.program["steps"])
    s_on, s_off = Session(on), Session(off)
    assert n_concat == 58 and len(s_on.elided_steps) == n_concat and s_off.elided_steps == []
    (inp,) = s_on.get_inputs()
    feeds = {inp.name: np.random.default_rng(0).random(inp.shape, dtype=np.float32)}
    for _ in range(2):  # the second run reuses the arena
        np.testing.assert_array_equal(s_off.run(None, feeds)[0], s_on.run(None, feeds)[0])
