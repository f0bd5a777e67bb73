"""A test-only IR interpreter: quant.* ops through `runtime.kernels.quant`, fused
ops through NumPy, core ops through `onnx.reference` — independent of codegen
and the runtime, so the quantize pass's numerics are checked on their own."""

from __future__ import annotations

from typing import Any

import numpy as np

from ir.core import Graph
from runtime.kernels.quant import KERNELS
from tests.passes._eval import interpret

__all__ = ["eval_runner", "run_graph"]


def run_graph(g: Graph, feeds: dict[str, np.ndarray], extra: list[str] = ()) -> dict[str, np.ndarray]:
    env = interpret(g, feeds, KERNELS)
    named = {r.name: env[id(r)] for op in g.ops for r in op.results}
    out = {v.name: env[id(v)] for v in g.outputs}
    out.update({n: named[n] for n in extra})
    return out


def eval_runner(graph: Graph, names: Any) -> Any:
    """A calibration runner (`passes.calibrator.RunnerFactory`) on this interpreter."""
    return lambda feeds: run_graph(graph, feeds, [n for n in names if n not in feeds]) | {
        n: feeds[n] for n in names if n in feeds}
