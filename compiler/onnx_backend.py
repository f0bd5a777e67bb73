"""An `onnx.backend.base.Backend` over atcpy, so ONNX's own test runner
(`onnx.backend.test.BackendTest`) and the node cases from
`onnx.backend.test.case.node.collect_testcases` run against atcpy.

Every `prepare` goes the whole way a user's model goes: compile → `.om`
bytes → load → run.  Input shapes are taken from the first feeds when the
model leaves them symbolic (the executable is compiled for those shapes and
recompiled if later feeds differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

__all__ = ["AtcpyBackend", "AtcpyRep", "prepare", "run_model", "run_node", "supports_device"]


class AtcpyRep(BackendRep):
    def __init__(self, model: onnx.ModelProto, soc_version: str, options: dict[str, Any]) -> None:
        self.model = model
        self.soc_version = soc_version
        self.options = options
        inits = {i.name for i in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self._sessions: dict[tuple, Any] = {}
        static = all(
            d.HasField("dim_value")
            for i in model.graph.input if i.name not in inits
            for d in i.type.tensor_type.shape.dim
        )
        if static:
            self._session_for(None)

    def _session_for(self, shapes: dict[str, list[int]] | None):
        from compiler.driver import compile_model
        from runtime import Session

        key = tuple(sorted((k, tuple(v)) for k, v in (shapes or {}).items()))
        if key not in self._sessions:
            exe = compile_model(self.model, soc_version=self.soc_version, input_shapes=shapes, **self.options)
            # through the serialized form, as a deployed model would be
            self._sessions[key] = Session(exe.to_bytes())
        return self._sessions[key]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self.input_names, inputs))
        if () in self._sessions:
            sess = self._sessions[()]
        else:
            shapes = {k: list(np.shape(v)) for k, v in feeds.items()}
            sess = self._session_for(shapes)
        return tuple(sess.run(None, feeds))


class AtcpyBackend(Backend):
    soc_version = "Ascend310P3"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> AtcpyRep:
        super().prepare(model, device, **kwargs)
        kwargs.pop("rtol", None)
        kwargs.pop("atol", None)
        return AtcpyRep(model, kwargs.pop("soc_version", cls.soc_version), kwargs)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info: Any = None, **kwargs: Any):
        graph_inputs = [
            onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype),
                                               np.shape(x))
            for n, x in zip(node.input, inputs) if n
        ]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n]
        g = onnx.helper.make_graph([node], "node", graph_inputs, graph_outputs)
        model = onnx.helper.make_model(g)
        return cls.run_model(model, [x for n, x in zip(node.input, inputs) if n], device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() in ("CPU", "NPU")


prepare = AtcpyBackend.prepare
run_model = AtcpyBackend.run_model
run_node = AtcpyBackend.run_node
supports_device = AtcpyBackend.supports_device
