"""Shared fixtures for end-to-end tests: the model zoo's light models and the oracle."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))


def light_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


def light_input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The input ONNX's backend test runner feeds these models (arange / n)."""
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in i.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds[i.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


def light_expected(name: str) -> np.ndarray:
    t = onnx.TensorProto()
    t.ParseFromString((LIGHT_DIR / f"light_{name}_output_0.pb").read_bytes())
    return numpy_helper.to_array(t)


@pytest.fixture(scope="session")
def ort_threads() -> int:
    return int(os.environ.get("ATCPY_TEST_THREADS", "2"))


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The light models build every weight with ConstantOfShape (one value per
    tensor), which makes their outputs a uniform softmax over logits of ~1e10: a
    poor numeric check, and out of fp16's range.  This copy replaces each such
    weight with seeded LeCun-scaled values (1-D tensors — BatchNorm and bias
    parameters — in [0.5, 1.5)), keeping the graph exactly as it is."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    keep, new_inits = [], []
    for node in m.graph.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            shape = tuple(int(d) for d in inits[node.input[0]])
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                arr = rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)
            else:
                arr = rng.uniform(0.5, 1.5, shape)
            new_inits.append(numpy_helper.from_array(arr.astype(np.float32), node.output[0]))
        else:
            keep.append(node)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.initializer.extend(new_inits)
    return m
