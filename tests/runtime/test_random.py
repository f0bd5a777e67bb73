"""Random ops: a native Multinomial kernel, and steps the Session never folds.

The Session runs a step whose operands are all weights once, at load, and reuses
the result; a random op must draw on every run instead.  Codegen marks such steps
from the op declarations (``"nondeterministic": true``)."""

from __future__ import annotations

import numpy as np

from codegen import build_executable
from ir.core import Graph
from ir.types import DType, TensorType
from runtime import Session
from runtime.kernels import lookup_kernel


def _multinomial_graph(seed: float | None = None) -> Graph:
    g = Graph("draw")
    logits = g.const(np.log(np.array([[0.7, 0.2, 0.1]] * 4, np.float32)), "logits")
    attrs = {"sample_size": 2000, "dtype": 7} | ({} if seed is None else {"seed": seed})
    y = g.add_op("Multinomial", [logits], attrs, result_types=[TensorType(DType.i64, (4, 2000))]).result
    g.outputs.append(y)
    return g


def test_multinomial_draws_follow_the_probabilities():
    fn = lookup_kernel("Multinomial").fn
    logits = np.log(np.array([[0.7, 0.2, 0.1]], np.float32))
    (idx,) = fn([logits], {"sample_size": 20000, "dtype": 6, "seed": 3.0}, None)
    assert idx.dtype == np.int32 and idx.shape == (1, 20000)
    freq = np.bincount(idx.reshape(-1), minlength=3) / idx.size
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.02)
    (again,) = fn([logits], {"sample_size": 20000, "dtype": 6, "seed": 3.0}, None)
    np.testing.assert_array_equal(idx, again)  # a seed makes the draw repeatable


def test_a_random_step_on_constants_is_not_folded_at_load():
    exe = build_executable(_multinomial_graph())
    step = exe.program["steps"][0]
    assert step["kernel"] == "Multinomial" and step.get("nondeterministic") is True
    sess = Session(exe)
    assert sess.folded_steps == []
    a, = sess.run(None, {})
    b, = sess.run(None, {})
    assert not np.array_equal(a, b)  # folded once, both runs would return the same draw


def test_a_deterministic_step_on_constants_is_folded_at_load():
    g = Graph("fold")
    c = g.const(np.arange(6, dtype=np.float32).reshape(2, 3), "c")
    g.outputs.append(g.add_op("Relu", [c]).result)
    exe = build_executable(g)
    assert "nondeterministic" not in exe.program["steps"][0]
    assert len(Session(exe).folded_steps) == 1
