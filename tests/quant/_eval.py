"""A test-only IR interpreter: quant.* ops through `runtime.kernels.quant`, fused
ops through NumPy, core ops through `onnx.reference` — independent of codegen
and the runtime, so the quantize pass's numerics are checked on their own."""

from __future__ import annotations

from typing import Any

import numpy as np

from ir.core import Graph
from passes._onnx_eval import evaluate_op
from runtime.kernels.quant import KERNELS
from tests.passes._eval import eval_fused

__all__ = ["eval_runner", "run_graph"]


def run_graph(g: Graph, feeds: dict[str, np.ndarray], extra: list[str] = ()) -> dict[str, np.ndarray]:
    env: dict[int, Any] = {id(v): feeds[v.name] for v in g.inputs}
    named: dict[str, np.ndarray] = {}
    for op in g.ops:
        xs = [None if v is None else env[id(v)] for v in op.operands]
        if op.kind == "const":
            ys = [op.attrs["value"]]
        elif op.kind in KERNELS:
            attrs = {k: v for k, v in op.attrs.items()}
            ys = KERNELS[op.kind](xs, attrs, None)
        elif op.namespace == "fused":
            ys = eval_fused(op, xs)
        else:
            ys = evaluate_op(op, xs)
        for r, y in zip(op.results, ys):
            env[id(r)] = np.asarray(y)
            named[r.name] = env[id(r)]
    out = {v.name: env[id(v)] for v in g.outputs}
    out.update({n: named[n] for n in extra})
    return out


def eval_runner(graph: Graph, names: Any) -> Any:
    """A calibration runner (`compiler.calibration.RunnerFactory`) on this interpreter."""
    return lambda feeds: run_graph(graph, feeds, [n for n in names if n not in feeds]) | {
        n: feeds[n] for n in names if n in feeds}
