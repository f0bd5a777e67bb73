"""``weights_meta_only``: passes plan with weights they never read (`passes._meta`), and
the budget check made before any weight is read (`passes._budget`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ir import DType, Graph, TensorType
from ir.errors import MemoryBudgetError
from passes import PASSES, PassContext
from passes._budget import check_early, weights_lower_bound
from passes._meta import is_mapped_or_placeholder, placeholder, unread
from passes.options import PassOptions

META = {"weights_meta_only": True}


def mapped(tmp_path: Path, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A read-only view of a sparse file, as the frontend maps external data."""
    path = tmp_path / f"{name}.bin"
    with open(path, "wb") as f:
        f.truncate(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return np.asarray(np.memmap(path, dtype=dtype, mode="r", shape=shape))


def siblings(wq: np.ndarray, wk: np.ndarray) -> Graph:
    g = Graph("s")
    x = g.add_input("x", TensorType(DType.f32, (1, "S", wq.shape[0])))
    q = g.add_op("MatMul", [x, g.const(wq, "wq")]).result
    k = g.add_op("MatMul", [x, g.const(wk, "wk")]).result
    g.outputs = [g.add_op("Relu", [q]).result, g.add_op("Relu", [k]).result]
    return g


def consts(g: Graph) -> dict[str, np.ndarray]:
    return {op.result.name: op.attrs["value"] for op in g.ops if op.kind == "const"}


def test_placeholders_and_mapped_arrays_are_recognized(tmp_path) -> None:
    p = placeholder((64, 96), np.float16)
    assert p.nbytes == 64 * 96 * 2 and p.strides == (0, 0) and not p.flags.writeable
    m = mapped(tmp_path, "w", (8, 4))
    assert is_mapped_or_placeholder(p) and is_mapped_or_placeholder(m) and is_mapped_or_placeholder(m[2:].T)
    assert not is_mapped_or_placeholder(np.ones((8, 4))) and not is_mapped_or_placeholder(np.float32(1))
    assert unread(m, PassOptions(weights_meta_only=True)) and not unread(m, PassOptions())


def test_fuse_siblings_concatenates_placeholders_under_meta(tmp_path) -> None:
    wq, wk = mapped(tmp_path, "wq", (64, 64)), mapped(tmp_path, "wk", (64, 32))
    g = siblings(wq, wk)
    assert PASSES["fuse-siblings"]().run(g, PassContext(options=META))
    (fused,) = [a for a in consts(g).values() if a.ndim == 2]
    assert fused.shape == (64, 96) and fused.nbytes == 64 * 96 * 4 and fused.strides == (0, 0)
    g = siblings(np.ones((64, 64), np.float32), np.full((64, 32), 2, np.float32))
    PASSES["fuse-siblings"]().run(g, PassContext())  # a real compile concatenates the values
    (fused,) = [a for a in consts(g).values() if a.ndim == 2]
    assert fused.strides != (0, 0) and fused[0, 63] == 1 and fused[0, 64] == 2


def test_cse_does_not_hash_mapped_constants_under_meta(tmp_path) -> None:
    def graph() -> Graph:
        g = Graph("c")
        x = g.add_input("x", TensorType(DType.f32, (4, 8)))
        a = g.add_op("Mul", [x, g.const(mapped(tmp_path, "a", (8,)), "a")]).result
        b = g.add_op("Mul", [x, g.const(mapped(tmp_path, "b", (8,)), "b")]).result
        g.outputs = [g.add_op("Add", [a, b]).result]
        return g

    g = graph()
    assert not PASSES["cse"]().run(g, PassContext(options=META))  # two norm weights stay two
    assert len(consts(g)) == 2
    g = graph()
    assert PASSES["cse"]().run(g, PassContext())  # their bytes are equal (zeros): merged
    assert len(consts(g)) == 1


def test_canonicalize_folds_a_mapped_weight_into_a_placeholder(tmp_path) -> None:
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.f32, (2, 16)))
    wt = g.add_op("Transpose", [g.const(mapped(tmp_path, "w", (32, 16)), "w")], {"perm": [1, 0]}).result
    g.outputs = [g.add_op("MatMul", [x, wt]).result]
    PASSES["canonicalize"]().run(g, PassContext(options=META))
    (w,) = consts(g).values()
    assert w.shape == (16, 32) and w.strides == (0, 0) and [op.kind for op in g.ops] == ["const", "MatMul"]


def test_canonicalize_gemm_trans_b_under_meta(tmp_path) -> None:
    g = Graph("gemm")
    x = g.add_input("x", TensorType(DType.f32, (2, 16)))
    b = g.const(mapped(tmp_path, "b", (32, 16)), "b")
    g.outputs = [g.add_op("Gemm", [x, b], {"transB": 1}).result]
    PASSES["canonicalize"]().run(g, PassContext(options=META))
    (w,) = consts(g).values()
    assert w.shape == (16, 32) and w.strides == (0, 0)


def test_weights_lower_bound_follows_the_quant_type() -> None:
    g = Graph("q")
    ids = g.add_input("ids", TensorType(DType.i64, (1, "S")))
    h = g.add_op("Gather", [g.const(placeholder((1000, 256), np.float32), "embed"), ids], {"axis": 0}).result
    h = g.add_op("Mul", [h, g.const(placeholder((256,), np.float32), "norm")]).result
    g.outputs = [g.add_op("MatMul", [h, g.const(placeholder((256, 512), np.float32), "w")]).result]
    plain = 1000 * 256 * 4 + 256 * 4 + 256 * 512 * 4
    assert weights_lower_bound(g, PassOptions()) == plain
    assert weights_lower_bound(g, PassOptions(precision_mode="force_fp16")) == plain // 2
    w4 = 256 * 512 // 2 + 2 * 512 * 4  # codes + a float32 scale per 128 rows of K
    table4 = 256 * 1000 // 2 + 2 * 1000 * 4  # the embedding in groups along D
    assert weights_lower_bound(g, PassOptions(quant_type="W4A16")) == w4 + table4 + 256 * 4
    w8 = weights_lower_bound(g, PassOptions(quant_type="W8A16", weight_symmetric=False))
    assert w8 == 256 * 512 + 2 * 512 * 8 + 256 * 1000 + 2 * 1000 * 8 + 256 * 4  # scales and zero points


def test_check_early_names_the_sizes_and_the_budget() -> None:
    g = Graph("w")
    x = g.add_input("x", TensorType(DType.f32, (1, 256)))
    g.outputs = [g.add_op("MatMul", [x, g.const(placeholder((256, 512), np.float32), "w")]).result]
    check_early(g, PassContext(options={"mem_limit": 256 * 512 * 4}))  # fits exactly: no error
    with pytest.raises(MemoryBudgetError) as e:
        check_early(g, PassContext(options={"mem_limit": 100_000}))
    msg = str(e.value)
    assert e.value.exit_code == 3 and "before reading any weight" in msg and "(524288 bytes)" in msg
    assert "(100000 bytes), mem_limit" in msg
    check_early(g, PassContext(options={"mem_limit": 100_000, "quant_type": "W4A16"}))  # 69632 bytes as W4A16
