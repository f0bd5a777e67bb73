"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def model() -> Path:
    """The example model the README's first command compiles (made on first use)."""
    path = EXAMPLE / "tiny_cnn.onnx"
    if not path.exists():
        from examples.make_example import main as make

        make()
    return path
