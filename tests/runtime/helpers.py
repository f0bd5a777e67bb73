"""Build one-op IR graphs and their ONNX twins, run both, compare."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from codegen import build_executable
from ir import DType, Graph, TensorType
from runtime.session import Session

ANNOT = {"engine", "tile", "tiles", "offsets", "opset", "reason"}


def ir_single(kind: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None, *,
              consts: set[int] = frozenset(), n_outputs: int = 1,
              result_types: list[TensorType] | None = None) -> Graph:
    """A graph running `kind` once; operands in `consts` become const weights, the rest graph inputs."""
    g = Graph("single")
    operands = []
    for i, a in enumerate(inputs):
        if a is None:
            operands.append(None)
        elif i in consts:
            operands.append(g.const(a, name=f"c{i}"))
        else:
            operands.append(g.add_input(f"x{i}", TensorType(DType.from_numpy(a.dtype), a.shape)))
    if result_types is None and n_outputs > 1:
        raise ValueError("give result_types for several outputs")
    op = g.add_op(kind, operands, dict(attrs or {}), result_types=result_types)
    g.outputs = list(op.results[:n_outputs]) if result_types is None else list(op.results)
    return g


def run_ir(g: Graph, inputs: list[np.ndarray | None], *, via_bytes: bool = True) -> list[np.ndarray]:
    exe = build_executable(g, soc_version="Ascend310P3")
    sess = Session(exe.to_bytes() if via_bytes else exe)
    feeds = {v.name: inputs[int(v.name[1:])] for v in g.inputs}
    return sess.run(None, feeds)


def onnx_single(kind: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None, n_outputs: int = 1,
                opset: int = 18, domain: str = "") -> onnx.ModelProto:
    names = [f"x{i}" if a is not None else "" for i, a in enumerate(inputs)]
    while names and names[-1] == "":
        names.pop()
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(kind, names, outs, domain=domain or None,
                            **{k: numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v
                               for k, v in (attrs or {}).items() if k not in ANNOT})
    inits = [numpy_helper.from_array(a, f"x{i}") for i, a in enumerate(inputs) if a is not None]
    graph = helper.make_graph([node], "g", [], [helper.make_empty_tensor_value_info(o) for o in outs], inits)
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=imports, ir_version=9)


def reference(kind: str, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None = None, n_outputs: int = 1,
              opset: int = 18, engine: str = "reference", domain: str = "") -> list[np.ndarray]:
    m = onnx_single(kind, inputs, attrs, n_outputs, opset, domain)
    if engine == "ort":
        import onnxruntime as ort

        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(m).run(None, {})


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if got.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)
