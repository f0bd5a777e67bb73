"""Fixtures for the quantization tests: the digits data set and a small MLP
trained on it with scikit-learn (exported with skl2onnx)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


@pytest.fixture(scope="session")
def mlp_onnx(digits, tmp_path_factory) -> Path:
    import onnx
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x, y = digits
    clf = MLPClassifier((64, 32), max_iter=300, random_state=0).fit(x[:1200], y[:1200])
    model = to_onnx(clf, x[:1], options={"zipmap": False}, target_opset=17)
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    onnx.save(model, str(path))
    return path
