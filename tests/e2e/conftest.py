"""Shared helpers for end-to-end tests: the model zoo's light models (`tests._light`,
compiled once per session) and where their ops must run."""

from __future__ import annotations

from collections import Counter

import pytest

from runtime.om import np_dtype
from tests._light import (  # noqa: F401 - re-exported for the e2e tests
    LIGHT_DIR,
    LIGHT_MODELS,
    light_compile,
    light_expected,
    light_input,
    light_model,
    light_path,
    light_reference,
    with_logits_output,
    with_random_weights,
)
from tests._light import ort_threads as _ort_threads

SOCS = ("Ascend310P3", "Ascend910B")
# ops the place pass must put on the Cube (every other op of a light model runs on the
# Vector unit, but for the AICPU fallbacks below)
CUBE_KINDS = frozenset({"Conv", "Gemm", "MatMul", "fused.conv", "fused.matmul_add", "fused.matmul_add_relu",
                        "fused.matmul_relu"})
# The shipped alexnet, vgg19 and zfnet512 build their big fully-connected weights
# (> canonicalize's MAX_FOLD_ELEMENTS) with ConstantOfShape at run time; the 310P3 has
# no Vector kernel for it (the 910B has), so there it falls back to the AICPU.
AICPU_KINDS = {"Ascend310P3": frozenset({"ConstantOfShape"}), "Ascend910B": frozenset()}
SHIPPED_AICPU_FALLBACKS = {"bvlc_alexnet": 2, "vgg19": 2, "zfnet512": 1}  # on the 310P3


@pytest.fixture(scope="session")
def ort_threads() -> int:
    return _ort_threads()


def expected_engine(kind: str, soc: str) -> str:
    if kind in CUBE_KINDS:
        return "cube"
    return "aicpu" if kind in AICPU_KINDS[soc] else "vector"


def assert_engines(exe, soc: str, aicpu_fallbacks: int = 0) -> None:
    """Every op of the compiled graph runs where `expected_engine` says, the report
    counts exactly those engines, and the fallbacks are exactly the AICPU ops."""
    r = exe.report
    assert r["soc_version"] == soc
    ops = [op for op in exe.compilation.graph.ops if op.kind != "const"]
    wrong = [(op.kind, op.attrs.get("engine"), expected_engine(op.kind, soc)) for op in ops
             if op.attrs.get("engine") != expected_engine(op.kind, soc)]
    assert not wrong, f"{soc}: (kind, engine, expected) {sorted(set(wrong))}"
    want = Counter(expected_engine(op.kind, soc) for op in ops)
    engines = r["ops"]["by_engine"]
    assert engines == {e: want.get(e, 0) for e in ("cube", "vector", "aicpu")}
    assert r["ops"]["total"] == len(ops) == sum(engines.values())
    assert engines["cube"] > 0 and engines["vector"] > 0
    assert engines["aicpu"] == aicpu_fallbacks
    assert len(r["fallbacks"]) == aicpu_fallbacks
    assert all(f["kind"] in AICPU_KINDS[soc] and f["reason"] for f in r["fallbacks"])


def cube_operand_dtypes(exe) -> Counter:
    """How many floating operands of the program's Cube steps are of each dtype."""
    acts = exe.program["activations"]
    seen: Counter = Counter()
    for st in exe.program["steps"]:
        if st["engine"] != "cube":
            continue
        for ref in st["inputs"]:
            if ref is None:
                continue
            dt = np_dtype(acts[ref[1]]["dtype"]) if ref[0] == "a" else exe.weights[ref[1]].dtype
            if dt.kind == "f":
                seen[dt.name] += 1
    return seen
