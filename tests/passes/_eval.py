"""Run an IR graph on concrete inputs, for "the rewrite kept the meaning" tests.

``run_graph(g, feeds)`` lowers and runs through the runtime (`codegen` +
`runtime.Session`); ``engine="reference"`` interprets op by op with
`onnx.reference` (fused ops in NumPy) instead, independent of codegen/runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ir.core import Graph, Op
from runtime.kernels.aicpu import evaluate_op

__all__ = ["eval_fused", "interpret", "run_graph"]


def eval_fused(op: Op, xs: list) -> list[np.ndarray]:
    """A fused.* op in NumPy (its Conv core through `onnx.reference`)."""
    if op.kind == "fused.conv":
        core = Op("Conv", [], [op.result.type], {k: v for k, v in op.attrs.items() if k != "act"})
        core.operands = list(op.operands)  # evaluate_op reads only operand count/attrs, no use links needed
        y = evaluate_op(core, xs, opset=17)[0]
        act = op.attrs.get("act", "none")
    else:
        y = np.matmul(xs[0], xs[1])
        if op.kind != "fused.matmul_relu":
            y = y + xs[2]
        act = "relu" if op.kind.endswith("relu") else "none"
    return [np.maximum(y, 0).astype(y.dtype) if act == "relu" else y]


def interpret(g: Graph, feeds: dict[str, np.ndarray], kernels: Mapping[str, Callable] | None = None,
              ) -> dict[int, np.ndarray]:
    """Every value of `g` (by ``id``) for `feeds`, op by op: constants, then a
    kind in `kernels` (``fn(inputs, attrs, None) -> results``, runtime kernel
    style), fused ops in NumPy, the rest through `onnx.reference`."""
    env: dict[int, np.ndarray] = {id(v): np.asarray(feeds[v.name]) for v in g.inputs}
    for op in g.ops:
        xs = [None if v is None else env[id(v)] for v in op.operands]
        if op.kind == "const":
            ys = [op.attrs["value"]]
        elif kernels is not None and op.kind in kernels:
            ys = kernels[op.kind](xs, dict(op.attrs), None)
        elif op.namespace == "fused":
            ys = eval_fused(op, xs)
        else:
            ys = evaluate_op(op, xs)
        for r, y in zip(op.results, ys):
            env[id(r)] = np.asarray(y)
    return env


def _reference(g: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    env = interpret(g, feeds)
    return [env[id(v)] for v in g.outputs]


def run_graph(g: Graph, feeds: dict[str, np.ndarray], engine: str = "runtime") -> list[np.ndarray]:
    """Outputs of `g` for `feeds`, in graph output order."""
    if engine == "reference":
        return _reference(g, feeds)
    from codegen import build_executable
    from runtime.session import Session

    return [np.asarray(o) for o in Session(build_executable(g.clone())).run(None, feeds)]
