"""`PassOptions`: the typed options passes read; an unknown key is an error, and
each field reaches the pass that reads it."""

from __future__ import annotations

import dataclasses

import pytest

from compiler.driver import CompileOptions, compile_model
from ir import parse
from ir.errors import MemoryBudgetError, UsageError
from passes import PASSES
from passes.base import PassContext
from passes.options import PassOptions

SOFTMAX = """graph @g(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>) {
  %y = Softmax(%x) {axis = -1} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return %y
}
"""


def test_a_dict_is_checked_and_converted() -> None:
    ctx = PassContext(options={"mem_limit": 1024, "op_engine": "Softmax=aicpu"})
    assert ctx.options == PassOptions(mem_limit=1024, op_engine="Softmax=aicpu")
    with pytest.raises(UsageError, match="'overrides'"):
        PassContext(options={"overrides": "Softmax=aicpu"})  # the key --op_engine was once lost under
    with pytest.raises(UsageError, match="mem_limit"):
        PassOptions(mem_limit="1G")  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.options.mem_limit = 1  # type: ignore[misc]


def test_place_reads_op_engine_and_implmode() -> None:
    g = parse(SOFTMAX)
    PASSES["place"]().run(g, PassContext(options={"op_engine": "Softmax=aicpu"}))
    op = next(op for op in g.ops if op.kind == "Softmax")
    assert (op.attrs["engine"], op.attrs["reason"]) == ("aicpu", "Softmax: override -> aicpu")
    g = parse(SOFTMAX)
    PASSES["place"]().run(g, PassContext())
    assert next(op for op in g.ops if op.kind == "Softmax").attrs["engine"] == "vector"


def test_assign_buffers_reads_mem_limit() -> None:
    with pytest.raises(MemoryBudgetError, match="mem_limit"):
        PASSES["assign-buffers"]().run(parse(SOFTMAX), PassContext(options=PassOptions(mem_limit=64)))


def test_compile_options_build_the_pass_options() -> None:
    opts = CompileOptions(op_engine="Softmax=aicpu", mem_limit=1 << 20, keep_dtype="OpType::Conv")
    assert opts.pass_options() == PassOptions(precision_mode="force_fp32", op_select_implmode="high_performance",
                                              op_engine="Softmax=aicpu", keep_dtype="OpType::Conv", mem_limit=1 << 20)
    # the older dict spelling: each key must be a field
    assert CompileOptions(extra={"progress": False}).progress is False
    with pytest.raises(UsageError, match="bogus"):
        CompileOptions(extra={"bogus": 1})
    with pytest.raises(UsageError, match="bogus"):
        compile_model("unused.onnx", bogus=1)
    with pytest.raises(UsageError, match="--input_format=NC1HWC0"):
        CompileOptions(input_format="NC1HWC0").check()
    with pytest.raises(UsageError, match="--op_engine"):
        CompileOptions(op_engine="Softmax").check()
