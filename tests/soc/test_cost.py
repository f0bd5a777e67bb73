"""Cost model: monotone in size, 910B faster than 310P3, engines ordered as the seed says."""

from __future__ import annotations

import logging

import ir
from ir.registry import gemm_dims
from passes import PASSES, PassContext
from passes.place import estimate
from passes.target.cost import op_seconds
from passes.target.soc import load_soc


def _matmul(m: int, k: int, n: int, dt: str = "f16") -> ir.Graph:
    return ir.parse(f"""graph @t(%a: tensor<{m}x{k}x{dt}>, %b: tensor<{k}x{n}x{dt}>) -> (tensor<{m}x{n}x{dt}>) {{
  %y = MatMul(%a, %b) : (tensor<{m}x{k}x{dt}>, tensor<{k}x{n}x{dt}>) -> tensor<{m}x{n}x{dt}>
  return %y
}}""")


def _model() -> ir.Graph:
    return ir.parse("""graph @mlp(%x: tensor<64x1024xf32>) -> (tensor<64x1000xf32>) {
  %w0 = const() {value = dense_resource<"w0"> : tensor<1024x4096xf32>} : () -> tensor<1024x4096xf32>
  %b0 = const() {value = dense_resource<"b0"> : tensor<4096xf32>} : () -> tensor<4096xf32>
  %w1 = const() {value = dense_resource<"w1"> : tensor<4096x1000xf32>} : () -> tensor<4096x1000xf32>
  %0 = fused.matmul_add_relu(%x, %w0, %b0) : (tensor<64x1024xf32>, tensor<1024x4096xf32>, tensor<4096xf32>) -> tensor<64x4096xf32>
  %1 = MatMul(%0, %w1) : (tensor<64x4096xf32>, tensor<4096x1000xf32>) -> tensor<64x1000xf32>
  %2 = Softmax(%1) : (tensor<64x1000xf32>) -> tensor<64x1000xf32>
  return %2
}""", synthesize=True)


def test_bigger_matmul_costs_more():
    soc = load_soc("Ascend310P3")
    prev = 0.0
    for m in (16, 64, 256, 1024, 4096):
        t = estimate(_matmul(m, 512, 512), soc)["total_ms"]
        assert t > prev
        prev = t
    for k in (128, 1024, 8192):
        t2 = op_seconds(_matmul(256, k, 256).ops[0], soc, "cube").seconds
        t1 = op_seconds(_matmul(256, k // 2, 256).ops[0], soc, "cube").seconds
        assert t2 > t1


def test_910b_faster_than_310p3_for_same_model():
    g = _model()
    for p in ("tile", "place"):
        PASSES[p]().run(g, PassContext(soc=load_soc("Ascend310P3")))
    t310p = estimate(g, "Ascend310P3")["total_ms"]
    t910b = estimate(g, "Ascend910B")["total_ms"]
    t310 = estimate(g, "Ascend310")["total_ms"]
    assert t910b < t310p < t310


def test_estimate_shape_and_unplaced_graphs():
    g = _model()
    r = estimate(g, "Ascend310P3")  # not placed: estimate uses the place policy
    assert set(r) >= {"total_ms", "per_op"}
    assert [p["kind"] for p in r["per_op"]] == ["fused.matmul_add_relu", "MatMul", "Softmax"]
    assert [p["engine"] for p in r["per_op"]] == ["cube", "cube", "vector"]
    assert abs(sum(p["ms"] for p in r["per_op"]) - r["total_ms"]) < 1e-9
    assert all(p["ms"] > 0 for p in r["per_op"])


def test_engines_ordered_cube_vector_aicpu_for_a_big_matmul():
    soc = load_soc("Ascend310P3")
    g = _matmul(4096, 128, 4096)
    PASSES["tile"]().run(g, PassContext(soc=soc))
    op = g.ops[0]
    cube, vec, cpu = (op_seconds(op, soc, e).seconds for e in ("cube", "vector", "aicpu"))
    assert cube < vec < cpu
    assert 10 < vec / cube  # the seed: Vector fallback ~20x slower than the Cube
    assert cpu / vec > 40  # and AICPU ~50x slower again


def test_int8_cube_faster_than_f16():
    soc = load_soc("Ascend310P3")
    f16 = op_seconds(_matmul(1024, 1024, 1024, "f16").ops[0], soc, "cube")
    i8 = ir.parse("""graph @t(%a: tensor<1024x1024xi8>, %b: tensor<1024x1024xi8>) -> (tensor<1024x1024xi32>) {
  %y = MatMulInteger(%a, %b) : (tensor<1024x1024xi8>, tensor<1024x1024xi8>) -> tensor<1024x1024xi32>
  return %y
}""").ops[0]
    assert op_seconds(i8, soc, "cube").cycles < f16.cycles


def test_gemm_dims_conv_implicit_gemm():
    g = ir.parse("""graph @c(%x: tensor<2x64x56x56xf32>) -> (tensor<2x128x28x28xf32>) {
  %w = const() {value = dense_resource<"w"> : tensor<128x32x3x3xf32>} : () -> tensor<128x32x3x3xf32>
  %y = Conv(%x, %w) {group = 2, pads = [1, 1, 1, 1], strides = [2, 2]} : (tensor<2x64x56x56xf32>, tensor<128x32x3x3xf32>) -> tensor<2x128x28x28xf32>
  return %y
}""", synthesize=True)
    d = gemm_dims(g.ops[-1])
    assert (d.batch, d.m, d.k, d.n) == (2, 2 * 28 * 28, 32 * 9, 64)


def test_place_stats_log_and_default_soc(caplog):
    g = ir.parse("""graph @t(%x: tensor<4x10xf32>, %k: tensor<1xi64>) -> (tensor<4x3xf32>) {
  %r = Relu(%x) : (tensor<4x10xf32>) -> tensor<4x10xf32>
  %v = com.example.Frobnicate(%r, %k) : (tensor<4x10xf32>, tensor<1xi64>) -> tensor<4x3xf32>
  return %v
}""")
    ctx = PassContext(soc=None)  # callers without a SoC get Ascend310P3
    with caplog.at_level(logging.INFO, logger="atcpy"):
        assert PASSES["place"]().run(g, ctx)
    assert ctx.stats["engines"] == {"vector": 1, "aicpu": 1}
    assert any("Frobnicate: opaque ONNX op" in r.getMessage() for r in caplog.records)
    assert all(isinstance(op.attrs.get("cost_cycles"), int) for op in g.ops)
    ir.verify(g)
    assert not PASSES["place"]().run(g, PassContext())  # idempotent


def test_tile_stats():
    g = _matmul(4096, 128, 4096, "f32")
    ctx = PassContext()
    assert PASSES["tile"]().run(g, ctx)
    assert ctx.stats["tiling"] == {"tiled_ops": 1, "tiles": 256}
    assert not PASSES["tile"]().run(g, PassContext())  # idempotent


def _gather(rows: int) -> ir.Graph:
    return ir.parse(f"""graph @e(%ids: tensor<1x1xi64>) -> (tensor<1x1x512xf32>) {{
  %t = const() {{value = dense_resource<"t"> : tensor<{rows}x512xf32>}} : () -> tensor<{rows}x512xf32>
  %y = Gather(%t, %ids) {{axis = 0}} : (tensor<{rows}x512xf32>, tensor<1x1xi64>) -> tensor<1x1x512xf32>
  return %y
}}""", synthesize=True)


def test_a_gather_costs_the_rows_it_picks_not_its_table():
    """An embedding lookup of one token moves one row whatever the vocabulary (INDEXED_READ)."""
    soc = load_soc("Ascend310P3")
    small, big = (op_seconds(_gather(n).ops[-1], soc, "vector").seconds for n in (1000, 100_000))
    assert big == small


def _gather_int4(rows: int) -> ir.Graph:
    """An embedding table packed in int4 (two per byte, groups of 32 along d = 512)."""
    return ir.parse(f"""graph @e(%ids: tensor<1x1xi64>) -> (tensor<1x1x512xf32>) {{
  %t = const() {{value = dense_resource<"t"> : tensor<16x16x{rows}xu8>}} : () -> tensor<16x16x{rows}xu8>
  %s = const() {{value = dense_resource<"s"> : tensor<16x{rows}xf32>}} : () -> tensor<16x{rows}xf32>
  %y = quant.gather_nbits(%ids, %t, %s) {{bits = 4, d = 512, group_size = 32}} : (tensor<1x1xi64>, tensor<16x16x{rows}xu8>, tensor<16x{rows}xf32>) -> tensor<1x1x512xf32>
  return %y
}}""", synthesize=True)


def test_a_packed_int4_table_is_not_priced_as_an_index():
    """The integer operands of an INDEXED_READ op are its indices -- but a packed int4 or
    int8 table is an integer operand too, and must not be priced as read whole."""
    soc = load_soc("Ascend310P3")
    small, big = (op_seconds(_gather_int4(n).ops[-1], soc, "vector").seconds for n in (1000, 100_000))
    assert big == small


def test_a_decode_step_appends_to_the_kv_cache_without_moving_it():
    """kv.append (APPENDS) costs the new positions: the same for a 100- or 4000-token cache."""
    soc = load_soc("Ascend310P3")

    def append(past: int) -> float:
        g = ir.parse(f"""graph @kv(%past: tensor<1x8x{past}x64xf32>, %new: tensor<1x8x1x64xf32>) -> (tensor<1x8x{past + 1}x64xf32>) {{
  %p = kv.append(%past, %new) {{axis = 2}} : (tensor<1x8x{past}x64xf32>, tensor<1x8x1x64xf32>) -> tensor<1x8x{past + 1}x64xf32>
  return %p
}}""")
        return op_seconds(g.ops[-1], soc, "vector").seconds

    assert append(4000) == append(100)
