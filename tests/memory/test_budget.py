"""The memory budget: weights + arena must fit the SoC's DDR or ``mem_limit``;
otherwise `MemoryBudgetError` (exit code 3) says what does not fit, by how much."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ir import DType, Graph, TensorType
from ir.errors import MemoryBudgetError
from passes import PassContext
from passes.assign_buffers import AssignBuffers, format_bytes, plan_summary


def mlp() -> Graph:
    """weights 64x256 + 256x256 f32 = 327680 bytes; activations 4 KiB each."""
    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.f32, (4, 64)))
    h = g.add_op("MatMul", [x, g.const(np.ones((64, 256), np.float32), "w0")]).result
    h = g.add_op("Relu", [h]).result
    g.outputs = [g.add_op("MatMul", [h, g.const(np.ones((256, 256), np.float32), "w1")]).result]
    return g


WEIGHTS, ARENA = 327680, 8192


@dataclass
class FakeSoc:
    name: str
    ddr_bytes: int


def test_plan_of_the_mlp() -> None:
    g = mlp()
    ctx = PassContext()
    AssignBuffers().run(g, ctx)
    assert (g.attrs["weights_bytes"], g.attrs["arena_bytes"]) == (WEIGHTS, ARENA)
    assert ctx.stats["memory"]["arena_bytes"] == ARENA
    assert ctx.stats["memory"]["inplace_ops"] == 1
    s = plan_summary(g)
    assert s["naive_bytes"] == 3 * 4096 and s["saving_vs_naive_pct"] == pytest.approx(33.33, abs=0.01)
    assert s["planned_tensors"] == 3 and s["unplanned_tensors"] == 0


def test_mem_limit_error_names_weights_arena_total_and_budget() -> None:
    g = mlp()
    limit = WEIGHTS + ARENA - 1
    with pytest.raises(MemoryBudgetError) as e:
        AssignBuffers().run(g, PassContext(options={"mem_limit": limit}))
    msg = str(e.value)
    assert e.value.exit_code == 3
    for n in (WEIGHTS, ARENA, WEIGHTS + ARENA, limit):
        assert f"({n} bytes)" in msg
    assert "320.0 KiB" in msg and "mem_limit" in msg


def test_exact_fit_is_accepted() -> None:
    g = mlp()
    AssignBuffers().run(g, PassContext(options={"mem_limit": WEIGHTS + ARENA}))
    assert g.attrs["arena_bytes"] == ARENA


def test_soc_ddr_is_the_budget() -> None:
    with pytest.raises(MemoryBudgetError, match=r"DDR of TinySoc"):
        AssignBuffers().run(mlp(), PassContext(soc=FakeSoc("TinySoc", 256 << 10)))
    AssignBuffers().run(mlp(), PassContext(soc=FakeSoc("BigSoc", 1 << 30)))


def test_the_smaller_budget_is_named() -> None:
    with pytest.raises(MemoryBudgetError, match=r"mem_limit"):
        AssignBuffers().run(mlp(), PassContext(soc=FakeSoc("BigSoc", 1 << 30), options={"mem_limit": 1000}))


def test_real_soc_models_fit_a_small_model() -> None:
    from passes.target.soc import load_soc

    soc = load_soc("Ascend310P3")
    assert soc.ddr_bytes >= 1 << 30
    AssignBuffers().run(mlp(), PassContext(soc=soc))


def test_format_bytes_units() -> None:
    assert format_bytes(100) == "100 bytes"
    assert format_bytes(3 << 20) == "3.0 MiB (3145728 bytes)"
    assert format_bytes(8 << 30) == "8.0 GiB (8589934592 bytes)"


def test_results_outside_the_arena_count_against_the_budget() -> None:
    g = mlp()
    # an AICPU op's 4 KiB result is not in the arena but still needs memory
    g.outputs.append(g.add_op("Neg", [g.outputs[0]], {"engine": "aicpu"}).result)
    AssignBuffers().run(g, PassContext(options={"mem_limit": WEIGHTS + ARENA + 4096}))
    with pytest.raises(MemoryBudgetError, match=r"outside the arena 4.0 KiB \(4096 bytes\)"):
        AssignBuffers().run(g, PassContext(options={"mem_limit": WEIGHTS + ARENA + 4095}))
