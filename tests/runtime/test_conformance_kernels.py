"""Kernel regressions found by the ONNX node-case conformance run (`bench/conformance.py`)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.kernels import load_families, lookup_kernel

load_families()


@pytest.mark.parametrize(("kind", "dtype", "want"), [
    ("ReduceMax", np.float32, -np.inf), ("ReduceMin", np.float32, np.inf),
    ("ReduceMax", np.bool_, False), ("ReduceMin", np.int64, np.iinfo(np.int64).max),
    ("ReduceLogSumExp", np.float32, -np.inf),
])
def test_reduction_of_an_empty_set_is_its_identity(kind, dtype, want):
    x = np.zeros((2, 0, 4), dtype)
    (y,) = lookup_kernel(kind).fn([x, np.array([1], np.int64)], {"keepdims": 1}, None)
    assert y.shape == (2, 1, 4) and y.dtype == dtype
    assert (y == want).all()


def test_dropout_training_mode_drops_and_scales_reproducibly():
    x = np.ones((4, 50), np.float32)
    run = lookup_kernel("Dropout").fn
    y, mask = run([x, np.array(0.25, np.float32), np.array(True)], {"seed": 3}, None)
    y2, _ = run([x, np.array(0.25, np.float32), np.array(True)], {"seed": 3}, None)
    assert mask.dtype == np.bool_ and 0 < mask.sum() < mask.size
    np.testing.assert_allclose(y, np.where(mask, 1 / 0.75, 0), rtol=1e-6)
    np.testing.assert_array_equal(y, y2)
    # inference mode stays the identity
    y, mask = run([x, np.array(0.25, np.float32), np.array(False)], {}, None)
    assert (y == x).all() and mask.all()
