"""float16 held in float32 containers (`runtime.f16`): the rounding law, and that an
emulated fp16 program computes what the native-float16 runtime computes.

The rounding must equal numpy's own f32 -> f16 -> f32 bit for bit over every class of
float32 (normals, f16's subnormal range, ties, overflow, inf, NaN, -0.0); an emulated
program's arena is the plan's at doubled offsets; callers still feed and get float16;
and a chain of Vector ops gives the native result exactly, which it would not if the
rounding after each step were dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from compiler.driver import compile_model
from runtime import Session
from runtime.f16 import _SMALL, Rounder, round_to_f16

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.onnx"


def _reference(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x.astype(np.float16).astype(np.float32)


def _assert_same_bits(got: np.ndarray, x: np.ndarray) -> None:
    want = _reference(x)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    # NaN keeps its sign (its payload is not narrowed); every other value bit for bit
    assert np.array_equal(np.signbit(got[nan]), np.signbit(want[nan]))
    bad = (got.view(np.uint32) != want.view(np.uint32)) & ~nan
    assert not bad.any(), f"{x[bad][:5]} -> {got[bad][:5]}, want {want[bad][:5]}"


def _f16_neighbourhood() -> np.ndarray:
    """Every finite f16 value, the midpoints between neighbours and the f32 values just
    either side of each midpoint (where round-to-nearest-even decides), both signs."""
    h = np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)
    up = np.append(h[1:], np.float32(65536.0))  # above 65504 the next step is where f16 overflows
    mid = (h.astype(np.float64) + up) / 2
    mid32 = mid.astype(np.float32)
    xs = np.concatenate([h, mid32, np.nextafter(mid32, np.float32(0)), np.nextafter(mid32, np.float32(np.inf))])
    return np.concatenate([xs, -xs])


def test_rounding_equals_numpy_on_every_f16_value_midpoint_and_neighbour() -> None:
    x = _f16_neighbourhood()
    _assert_same_bits(round_to_f16(x), x)
    assert x.size > _SMALL
    pos = x[~np.signbit(x)]  # no sign bit anywhere: the unsigned path (a ReLU's result)
    _assert_same_bits(round_to_f16(pos), pos)
    with_neg_zero = np.append(pos, np.float32(-0.0))  # one -0.0 sends it the signed way, and stays -0.0
    _assert_same_bits(round_to_f16(with_neg_zero), with_neg_zero)


def test_rounding_equals_numpy_on_a_sweep_of_all_float32_bit_patterns() -> None:
    x = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    _assert_same_bits(round_to_f16(x), x)


_CLASSES = st.one_of(
    st.integers(0, (1 << 32) - 1),  # any bit pattern
    st.integers(113 << 23, 143 << 23),  # f16's normal range up to 2**16 (positive)
    st.integers(0, 113 << 23),  # below 2**-14: f16 subnormals, underflow, f32 subnormals, +0.0
    st.integers(0x80000000, 0x80000000 + (113 << 23)),  # the same, negative (-0.0 included)
    st.integers(142 << 23, 0x7F7FFFFF),  # near f16's overflow and huge finite values
    st.sampled_from([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001, 0x80000000,
                     0x477FF000, 0x477FEFFF, 0x477FF001, 0x33000000, 0x33000001, 0xB3000000]),  # inf, NaN, ties
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_CLASSES, min_size=1, max_size=64))
def test_rounding_law_over_float32_classes(words) -> None:
    x = np.array(words, dtype=np.uint64).astype(np.uint32).view(np.float32)
    _assert_same_bits(round_to_f16(x), x)  # a few elements: numpy's own cast (`_SMALL`)
    for v in (x, x[~np.signbit(x)]):  # repeated past `_SMALL`: the block algorithm, signed and unsigned
        if v.size:
            big = np.resize(v, 4 * _SMALL)
            _assert_same_bits(round_to_f16(big), big)


@settings(max_examples=40, deadline=None)
@given(st.integers(113 << 23, 142 << 23), st.integers(_SMALL + 1, 200_000), st.integers(0, 9))
def test_rounding_in_place_over_blocks_and_strided_views(base, n, seed) -> None:
    """Large arrays run in blocks, each block choosing its own path; a strided view
    rounds through a copy; a NaN sends its block the general way."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.uint32(base).view(np.float32)).astype(np.float32)
    if seed % 3 == 0:
        x[rng.integers(0, n)] = np.nan
    want = x.copy()
    Rounder()(x)
    _assert_same_bits(x, want)
    y = want.reshape(-1, 1)[::2]
    got = y.copy()
    r = Rounder()
    strided = np.repeat(got, 2, axis=1)[:, ::2]  # a non-contiguous view
    r(strided)
    _assert_same_bits(strided, y)


# -- programs ------------------------------------------------------------------------------

def _chain_model() -> onnx.ModelProto:
    """x (f16) -> x*x -> + c -> / x -> sqrt(|.|): a Vector chain whose unrounded f32
    intermediates differ from the f16 ones."""
    c = numpy_helper.from_array(np.linspace(-3, 3, 64).astype(np.float16).reshape(1, 64), "c")
    nodes = [helper.make_node("Mul", ["x", "x"], ["t"]), helper.make_node("Add", ["t", "c"], ["u"]),
             helper.make_node("Div", ["u", "x"], ["v"]), helper.make_node("Abs", ["v"], ["w"]),
             helper.make_node("Sqrt", ["w"], ["y"])]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [8, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [8, 64]),
                           helper.make_tensor_value_info("v", TensorProto.FLOAT16, [8, 64])], [c])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _x16() -> np.ndarray:
    return (np.random.default_rng(0).standard_normal((8, 64)) * 3 + 0.1).astype(np.float16)


def test_an_f16_chain_equals_the_native_float16_runtime_bit_for_bit() -> None:
    """Each of Mul, Add, Div, Sqrt computed in f32 and rounded once is the correctly
    rounded f16 operation (24 >= 2 * 11 + 2 bits), as numpy's float16 ufuncs are, so
    the two storage modes agree exactly, on the first (planning) run and on later
    (planned) runs; without the rounding after each step they would not."""
    exe = compile_model(_chain_model())
    x = _x16()
    native = Session(exe, f16_storage="native").run(None, {"x": x})
    emu = Session(exe)
    assert emu.f16.emulate
    for _ in range(3):
        got = emu.run(None, {"x": x})
        for g, n in zip(got, native):
            assert g.dtype == np.float16
            assert np.array_equal(g.view(np.uint16), n.view(np.uint16))
    # the float32 evaluation of the same chain (what dropping the rounding would give) is not f16's
    x32 = x.astype(np.float32)
    c32 = np.linspace(-3, 3, 64).astype(np.float16).astype(np.float32)
    unrounded = ((x32 * x32 + c32) / x32).astype(np.float16)
    assert not np.array_equal(unrounded.view(np.uint16), native[1].view(np.uint16))


def test_emulated_arena_is_the_plan_doubled_and_holds_f16_values() -> None:
    exe = compile_model(_chain_model())
    plan = int(exe.header["memory"]["arena_bytes"])
    emu, nat = Session(exe), Session(exe, f16_storage="native")
    assert nat.arena.nbytes == plan and emu.arena.nbytes == 2 * plan
    [y, v] = emu.run(None, {"x": _x16()}, copy=False)
    assert y.dtype == v.dtype == np.float16  # narrowed for the caller even without a copy
    views = [a for a in emu._default.env[: len(exe.program["activations"])]
             if isinstance(a, np.ndarray) and np.shares_memory(a, emu.arena)]
    assert views and all(a.dtype == np.float32 for a in views)
    for a in views:  # every held value is exactly a float16 value
        assert np.array_equal(a, a.astype(np.float16).astype(np.float32))


def test_f16_weights_are_widened_once_and_fp32_programs_are_unchanged() -> None:
    exe16 = compile_model(str(EXAMPLE), precision_mode="force_fp16")
    sess = Session(exe16)
    f16_weights = [w for w, a in exe16.weights.items() if a.dtype == np.float16]
    assert f16_weights
    for w in f16_weights:
        c = sess._consts[sess._widx[w]]
        assert c.dtype == np.float32 and not c.flags.writeable
    exe32 = compile_model(str(EXAMPLE))
    s32 = Session(exe32)
    assert not s32.f16.emulate and s32.arena.nbytes == int(exe32.header["memory"]["arena_bytes"])


def test_example_model_fp16_agrees_under_both_storage_modes() -> None:
    exe = compile_model(str(EXAMPLE), precision_mode="force_fp16")
    x = np.load(EXAMPLE.with_name("tiny_cnn_input.npy"))
    name = Session(exe).get_inputs()[0].name
    want = Session(exe, f16_storage="native").run(None, {name: x})
    sess = Session(exe)
    for _ in range(2):
        got = sess.run(None, {name: x})
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            np.testing.assert_allclose(g, w, rtol=2e-3, atol=2e-3)
    fp32 = Session(compile_model(str(EXAMPLE))).run(None, {name: x})
    for g, w in zip(got, fp32):
        np.testing.assert_allclose(g, w, rtol=2e-2, atol=2e-2)


def test_f16_storage_must_be_named() -> None:
    with pytest.raises(ValueError, match="f16_storage"):
        Session(compile_model(_chain_model()), f16_storage="half")


def test_casts_to_f16_round_as_numpy_casts() -> None:
    """f32 input -> Cast f16 (rounded from source to view) -> Transpose -> Cast f32 ->
    Relu -> Cast f16 (values already f16: a copy) -> Mul -> output f16."""
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("Transpose", ["h"], ["t"], perm=[1, 0]),
             helper.make_node("Cast", ["t"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Relu", ["f"], ["r"]),
             helper.make_node("Cast", ["r"], ["h2"], to=TensorProto.FLOAT16),
             helper.make_node("Mul", ["h2", "h2"], ["y"])]
    g = helper.make_graph(nodes, "casts", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [96, 700])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [700, 96]),
                           helper.make_tensor_value_info("h", TensorProto.FLOAT16, [96, 700])])
    exe = compile_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9))
    x = np.random.default_rng(1).standard_normal((96, 700)).astype(np.float32) * 300
    x[0, :6] = [70000.0, -1e-6, 3e-8, -0.0, np.inf, np.nan]
    with np.errstate(over="ignore"):  # numpy's float16 cast and multiply warn on overflow to inf
        native = Session(exe, f16_storage="native").run(None, {"x": x})
        want_h = x.astype(np.float16)
    sess = Session(exe)
    for _ in range(2):
        for g_, n in zip(sess.run(None, {"x": x}), native):
            assert g_.dtype == np.float16
            assert np.array_equal(g_.view(np.uint16), n.view(np.uint16))
    assert np.array_equal(native[1].view(np.uint16), want_h.view(np.uint16))
