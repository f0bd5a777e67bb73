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
