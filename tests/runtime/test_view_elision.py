"""A view step (Reshape, Flatten, Squeeze, Unsqueeze, Identity) whose result the
memory plan put on its operand's bytes has nothing to do at run time: the
Session drops it at load, and the result view reads the same bytes."""

from __future__ import annotations

import numpy as np

from codegen import build_executable
from ir.core import Graph
from ir.types import DType, TensorType
from passes import PassContext
from passes.manager import PassManager
from runtime import Session


def _graph(symbolic: bool) -> Graph:
    g = Graph("views")
    x = g.add_input("x", TensorType(DType.f32, ("N" if symbolic else 2, 3, 4)))
    r = g.add_op("Relu", [x]).result
    shape = g.const(np.array([-1, 12], np.int64), "shape")
    y = g.add_op("Reshape", [r, shape]).result
    g.outputs.append(g.add_op("Neg", [y]).result)
    g.outputs.append(g.add_op("Reshape", [x, shape]).result)  # of a graph input: not in the arena
    if symbolic:
        g.attrs["dim_ranges"] = [["N", 1, 4]]
    return g


def _session(symbolic: bool) -> Session:
    g = _graph(symbolic)
    PassManager.parse("place,assign-buffers").run(g, PassContext())
    return Session(build_executable(g))


def test_an_aliased_view_step_is_dropped_and_reads_the_same_bytes():
    for symbolic, batch in ((False, 2), (True, 3)):
        sess = _session(symbolic)
        kernels = [s.kernel for s in sess._steps]
        assert kernels.count("Reshape") == 1  # only the Reshape of the graph input runs
        assert len(sess.elided_steps) == 1
        x = np.random.default_rng(0).normal(size=(batch, 3, 4)).astype(np.float32)
        neg, flat = sess.run(None, {"x": x})
        np.testing.assert_array_equal(neg, -np.maximum(x, 0).reshape(-1, 12))
        np.testing.assert_array_equal(flat, x.reshape(-1, 12))
