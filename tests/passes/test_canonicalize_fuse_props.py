"""Law: ``canonicalize,fuse`` keeps the meaning of random MLP- and CNN-shaped
graphs (outputs equal before and after, float tolerance), and every pass
result verifies."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ir.core import Graph, Value
from ir.types import DType, TensorType
from ir.verifier import verify
from passes import PassContext
from passes.manager import PassManager
from tests.passes._eval import run_graph

F32 = np.float32
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * 0.5).astype(F32)


@st.composite
def mlp_graphs(draw) -> tuple[Graph, dict[str, np.ndarray]]:
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    batch = draw(st.integers(1, 4))
    dims = draw(st.lists(st.integers(1, 12), min_size=2, max_size=5))
    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.f32, (batch, dims[0])))
    h: Value = x
    extra_outputs: list[Value] = []
    for i, (k, n) in enumerate(itertools.pairwise(dims)):
        form = draw(st.sampled_from(["gemm_t", "gemm", "gemm_ab", "matmul_add", "matmul", "bias_first"]))
        if form.startswith("gemm"):
            trans = form == "gemm_t"
            w = g.const(_w(rng, n, k) if trans else _w(rng, k, n), f"w{i}")
            c = g.const(_w(rng, n), f"b{i}") if draw(st.booleans()) else None
            attrs = {"transB": int(trans)}
            if form == "gemm_ab":
                attrs.update(alpha=draw(st.sampled_from([0.5, 2.0])), beta=draw(st.sampled_from([0.0, 1.5])))
            h = g.add_op("Gemm", [h, w] + ([c] if c is not None else []), attrs).result
        else:
            h = g.add_op("MatMul", [h, g.const(_w(rng, k, n), f"w{i}")]).result
            if form != "matmul":
                # the bias itself computed from constants: folding must see through it
                b0, b1 = g.const(_w(rng, n), f"b{i}a"), g.const(_w(rng, n), f"b{i}b")
                b = g.add_op("Add", [b0, b1]).result
                h = g.add_op("Add", [b, h] if form == "bias_first" else [h, b]).result
        if draw(st.booleans()):
            if draw(st.booleans()):
                extra_outputs.append(h)  # a second use of the pre-activation: blocks Relu fusion
            h = g.add_op("Relu", [h]).result
        wrapper = draw(st.sampled_from([None, "Identity", "Dropout"]))
        if wrapper:
            h = g.add_op(wrapper, [h]).result
    g.outputs = [h] + extra_outputs
    return g, {"x": rng.standard_normal((batch, dims[0])).astype(F32)}


@st.composite
def cnn_graphs(draw) -> tuple[Graph, dict[str, np.ndarray]]:
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    c = draw(st.integers(1, 4))
    size = draw(st.integers(3, 6))
    g = Graph("cnn")
    x = g.add_input("x", TensorType(DType.f32, (1, c, size, size)))
    h: Value = x
    extra: list[Value] = []
    for i in range(draw(st.integers(1, 3))):
        cout = draw(st.integers(1, 4))
        k = draw(st.sampled_from([1, 3]))
        ops = [h, g.const(_w(rng, cout, c, k, k), f"cw{i}")]
        if draw(st.booleans()):
            ops.append(g.const(_w(rng, cout), f"cb{i}"))
        h = g.add_op("Conv", ops, {"kernel_shape": [k, k], "pads": [k // 2] * 4}).result
        if draw(st.booleans()):
            if draw(st.booleans()):
                extra.append(h)  # Conv result with a second user: BN must not fold into it
            stats = [g.const(a, f"bn{i}_{j}") for j, a in enumerate([
                _w(rng, cout) + 1, _w(rng, cout), _w(rng, cout), np.abs(_w(rng, cout)) + 0.5])]
            h = g.add_op("BatchNormalization", [h, *stats]).result
        if draw(st.booleans()):
            h = g.add_op("Add", [h, g.const(_w(rng, 1, cout, 1, 1), f"ca{i}")]).result
        if draw(st.booleans()):
            h = g.add_op("Relu", [h]).result
        c = cout
    # the exporter's flatten: Shape→Gather→Unsqueeze→Concat→Reshape, then a Linear head
    shape = g.add_op("Shape", [h]).result
    n = g.add_op("Gather", [shape, g.const(np.array([0], np.int64), "i0")]).result
    tgt = g.add_op("Concat", [n, g.const(np.array([-1], np.int64), "m1")], {"axis": 0}).result
    flat_t = TensorType(DType.f32, (1, c * size * size))
    flat = g.add_op("Reshape", [h, tgt], result_types=[flat_t]).result
    w = g.const(_w(rng, 3, c * size * size), "fc_w")
    y = g.add_op("Gemm", [flat, w, g.const(_w(rng, 3), "fc_b")], {"transB": 1}).result
    g.outputs = [y] + extra
    return g, {"x": rng.standard_normal(x.type.shape).astype(F32)}


def _check_same_meaning(g: Graph, feeds: dict[str, np.ndarray]) -> Graph:
    verify(g)
    before = run_graph(g, feeds, engine="reference")
    after_g = g.clone()
    ctx = PassContext()
    PassManager.parse("canonicalize,fuse", verify_each=True).run(after_g, ctx)
    after = run_graph(after_g, feeds)
    assert [v.name for v in after_g.outputs] == [v.name for v in g.outputs]
    for b, a in zip(before, after):
        assert b.shape == a.shape and b.dtype == a.dtype
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    return after_g


@SETTINGS
@given(mlp_graphs())
def test_mlp_meaning_kept(case):
    g, feeds = case
    after = _check_same_meaning(g, feeds)
    kinds = {op.kind for op in after.ops}
    assert not kinds & {"Identity", "Dropout"}
    # every constant-only Add folded away: the remaining Adds read an activation
    for op in after.ops:
        if op.kind == "Add":
            assert any(v.producer is None or v.producer.kind != "const" for v in op.operands)


@SETTINGS
@given(cnn_graphs())
def test_cnn_meaning_kept(case):
    g, feeds = case
    after = _check_same_meaning(g, feeds)
    kinds = [op.kind for op in after.ops]
    assert "Shape" not in kinds and "Concat" not in kinds and "Gather" not in kinds
    # BN only survives as Mul+Add when its Conv has another user
    assert "BatchNormalization" not in kinds


@st.composite
def preactivation_graphs(draw) -> tuple[Graph, dict[str, np.ndarray]]:
    """DenseNet/Inception-shaped pieces: BN-as-scale-and-shift (two pairs), Relu,
    1x1 Conv and average pools before or after it, with random signs, pads and
    count_include_pad — the affine merge, the scale-through-Relu move and the
    pool/Conv commutation must keep the meaning whether or not they apply."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    cin, cout = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    size = draw(st.integers(3, 7))
    g = Graph("preact")
    x = g.add_input("x", TensorType(DType.f32, (1, cin, size, size)))
    h: Value = x
    for i in range(2):
        sign = draw(st.sampled_from([1.0, -1.0, 0.0]))  # all positive, mixed, or zero-free mixed
        s = (rng.uniform(0.5, 2.0, (cin, 1, 1)) * (np.where(rng.random((cin, 1, 1)) < 0.5, -1, 1) if sign < 0 else 1))
        h = g.add_op("Mul", [h, g.const(s.astype(F32), f"s{i}")]).result
        h = g.add_op("Add", [h, g.const(_w(rng, cin, 1, 1), f"t{i}")]).result
    h = g.add_op("Relu", [h]).result
    pool_attrs = {"kernel_shape": [2, 2], "strides": [draw(st.integers(1, 2))] * 2,
                  "pads": [draw(st.integers(0, 1))] * 4, "count_include_pad": draw(st.integers(0, 1))}
    pool_first = draw(st.booleans())
    if pool_first:
        h = g.add_op("AveragePool", [h], pool_attrs).result
    w = g.const(_w(rng, cout, cin, 1, 1), "w")
    h = g.add_op("Conv", [h, w, g.const(_w(rng, cout), "b")], {"kernel_shape": [1, 1]}).result
    if not pool_first:
        h = g.add_op("AveragePool", [h], pool_attrs).result
    g.outputs = [h]
    return g, {"x": rng.standard_normal(x.type.shape).astype(F32)}


@SETTINGS
@given(preactivation_graphs())
def test_preactivation_meaning_kept(case):
    g, feeds = case
    after = _check_same_meaning(g, feeds)
    kinds = [op.kind for op in after.ops]
    assert kinds.count("Mul") <= 1 and kinds.count("Add") <= 1  # the two scale/shift pairs merged
