"""Fixtures for the LLM tests: the three tiny optimum decoders (`tests.llm.decoders`),
exported once per session into a session temp directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.llm.decoders import KINDS, export_decoder

ORT_THREADS = 1  # the decoders are tiny: one intra-op thread is fastest and deterministic


@pytest.fixture(scope="session")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``decoder(kind) -> Path`` of ``<kind>.onnx`` for kind in ``KINDS``; exported on
    first use, then cached for the session.  The torch model sits next to it
    (`tests.llm.decoders.load_torch_decoder`).  optimum-onnx and transformers come
    with the ``test`` extras: without them these tests fail, they do not skip."""
    out = tmp_path_factory.mktemp("decoders")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown decoder kind {kind!r}; expected one of {KINDS}")
        if kind not in cache:
            cache[kind] = export_decoder(kind, out)
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def ort_session() -> Callable[[Path], object]:
    """``ort_session(path)``: a cached single-threaded onnxruntime CPU session."""
    import onnxruntime as ort

    cache: dict[Path, object] = {}

    def get(path: Path):
        if path not in cache:
            so = ort.SessionOptions()
            so.intra_op_num_threads = ORT_THREADS
            so.inter_op_num_threads = 1
            cache[path] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        return cache[path]

    return get
