"""Native kernels against onnx.reference / onnxruntime on the equivalent ONNX node."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from codegen import build_executable
from ir import DType, TensorType
from runtime.kernels import lookup_kernel
from runtime.session import Session
from tests.runtime.helpers import assert_close, ir_single, reference, run_ir

R = np.random.RandomState(0)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def i64(*vals: int) -> np.ndarray:
    return np.array(vals, dtype=np.int64)


X = f32(2, 3, 4)
POS = (np.abs(f32(2, 3, 4)) + 0.1).astype(np.float32)
UNIT = np.clip(f32(2, 3, 4) * 0.3, -0.9, 0.9).astype(np.float32)
IMG = f32(2, 3, 9, 8)

# (kind, inputs, attrs, const operand indices, engine)
CASES = [
    *[(k, [X], {}, set(), "ort") for k in ("Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "Floor", "Ceil", "Round",
                                            "Sin", "Cos", "Atan", "Sinh", "Sign", "Erf", "Softsign", "Softplus",
                                            "HardSwish", "Identity")],
    *[(k, [POS], {}, set(), "ort") for k in ("Log", "Sqrt", "Reciprocal", "Acosh")],
    *[(k, [UNIT], {}, set(), "ort") for k in ("Asin", "Acos", "Atanh", "Tan")],
    ("Mish", [X], {}, set(), "reference"),
    ("LeakyRelu", [X], {"alpha": 0.2}, set(), "ort"),
    ("Elu", [X], {"alpha": 0.7}, set(), "ort"),
    ("Celu", [X], {"alpha": 1.3}, set(), "ort"),
    ("Selu", [X], {}, set(), "ort"),
    ("ThresholdedRelu", [X], {"alpha": 0.3}, set(), "ort"),
    ("HardSigmoid", [X], {"alpha": 0.3, "beta": 0.4}, set(), "ort"),
    ("Gelu", [X], {}, set(), "reference"),
    ("Gelu", [X], {"approximate": "tanh"}, set(), "reference"),
    ("IsNaN", [np.array([1.0, np.nan, np.inf], np.float32)], {}, set(), "ort"),
    ("IsInf", [np.array([1.0, -np.inf, np.inf], np.float32)], {"detect_negative": 0}, set(), "ort"),
    ("Clip", [X, np.array(-0.5, np.float32), np.array(0.4, np.float32)], {}, {1, 2}, "ort"),
    ("Clip", [X, None, np.array(0.4, np.float32)], {}, {2}, "ort"),
    ("Cast", [X], {"to": 7}, set(), "ort"),
    ("Cast", [np.array([0, 2, -1], np.int64)], {"to": 9}, set(), "ort"),
    *[(k, [X, f32(3, 1)], {}, set(), "ort") for k in ("Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater",
                                                      "LessOrEqual", "GreaterOrEqual")],
    ("Pow", [POS, f32(4)], {}, set(), "ort"),
    ("Div", [np.array([7, -7, 7, -7], np.int64), np.array([2, 2, -2, -2], np.int64)], {}, set(), "ort"),
    ("Mod", [np.array([7, -7, 7, -7], np.int64), np.array([3, 3, -3, -3], np.int64)], {}, set(), "ort"),
    ("Mod", [X, np.array([0.7], np.float32)], {"fmod": 1}, set(), "ort"),
    ("And", [X > 0, X < 0.5], {}, set(), "ort"),
    ("Xor", [X > 0, X < 0.5], {}, set(), "ort"),
    ("Not", [X > 0], {}, set(), "ort"),
    ("PRelu", [X, f32(4)], {}, {1}, "ort"),
    ("Sum", [X, f32(4), f32(3, 4)], {}, set(), "ort"),
    ("Mean", [X, f32(4)], {}, set(), "ort"),
    ("Max", [X, f32(4)], {}, set(), "ort"),
    ("Min", [X, f32(4), f32(1)], {}, set(), "ort"),
    ("Where", [X > 0, X, f32(4)], {}, set(), "ort"),
    ("BitShift", [np.array([1, 8], np.uint32), np.array([2, 1], np.uint32)], {"direction": "LEFT"}, set(), "ort"),
    # reductions
    *[(k, [X, i64(1)], {"keepdims": kd}, {1}, "ort") for k in (
        "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
        "ReduceLogSumExp", "ReduceSumSquare") for kd in (0, 1)],
    ("ReduceLogSum", [POS, i64(0, 2)], {}, {1}, "ort"),
    ("ReduceSum", [X], {}, set(), "ort"),
    ("ReduceSum", [X, i64()], {"noop_with_empty_axes": 1}, {1}, "ort"),
    ("ArgMax", [X], {"axis": 1, "keepdims": 0}, set(), "ort"),
    ("ArgMin", [np.array([[1, 3, 1], [2, 2, 0]], np.float32)], {"axis": 1, "select_last_index": 1}, set(), "ort"),
    ("Softmax", [X], {"axis": 1}, set(), "ort"),
    ("LogSoftmax", [X], {}, set(), "ort"),
    # normalization
    ("BatchNormalization", [IMG, f32(3), f32(3), f32(3), POS[0, :, 0].copy()], {"epsilon": 1e-3},
     {1, 2, 3, 4}, "ort"),
    ("InstanceNormalization", [IMG, f32(3), f32(3)], {}, {1, 2}, "ort"),
    ("LayerNormalization", [X, f32(4), f32(4)], {"axis": -1}, {1, 2}, "ort"),
    ("LayerNormalization", [X, f32(3, 4)], {"axis": 1, "epsilon": 1e-3}, {1}, "ort"),
    ("LRN", [IMG], {"size": 3, "alpha": 0.01, "beta": 0.6, "bias": 2.0}, set(), "ort"),
    ("LRN", [f32(1, 6, 3, 3)], {"size": 4}, set(), "reference"),
    # pools
    ("MaxPool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2]}, set(), "ort"),
    ("MaxPool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1}, set(),
     "ort"),
    ("MaxPool", [IMG], {"kernel_shape": [2, 3], "dilations": [2, 1], "pads": [1, 1, 0, 1]}, set(), "ort"),
    ("AveragePool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, set(), "ort"),
    ("AveragePool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                            "count_include_pad": 1}, set(), "ort"),
    ("AveragePool", [IMG], {"kernel_shape": [3, 2], "strides": [2, 3], "ceil_mode": 1}, set(), "ort"),
    ("AveragePool", [IMG], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1,
                            "count_include_pad": 1}, set(), "ort"),
    ("MaxPool", [f32(2, 3, 10)], {"kernel_shape": [3], "strides": [2]}, set(), "ort"),
    ("GlobalAveragePool", [IMG], {}, set(), "ort"),
    ("GlobalMaxPool", [IMG], {}, set(), "ort"),
    # movement
    ("Reshape", [X, i64(4, 0, -1)], {}, {1}, "ort"),
    ("Flatten", [IMG], {"axis": 2}, set(), "ort"),
    ("Squeeze", [f32(1, 3, 1, 2), i64(0, -2)], {}, {1}, "ort"),
    ("Unsqueeze", [X, i64(0, -1)], {}, {1}, "ort"),
    ("Transpose", [IMG], {"perm": [0, 2, 3, 1]}, set(), "ort"),
    ("Transpose", [X], {}, set(), "ort"),
    ("Concat", [X, f32(2, 1, 4), f32(2, 2, 4)], {"axis": 1}, set(), "ort"),
    ("Slice", [IMG, i64(1, -1), i64(100, -7), i64(3, 2), i64(2, -2)], {}, {1, 2, 3, 4}, "ort"),
    ("Slice", [IMG, i64(-1), i64(-1000), i64(1), i64(-1)], {}, {1, 2, 3, 4}, "ort"),
    ("Gather", [IMG, np.array([[0, -1], [1, 1]], np.int64)], {"axis": 1}, {1}, "ort"),
    ("GatherElements", [X, np.array([[[0, -1, 1, 2]] * 3] * 2, np.int64)], {"axis": 2}, {1}, "ort"),
    ("Shape", [IMG], {"start": 1, "end": -1}, set(), "ort"),
    ("Size", [IMG], {}, set(), "ort"),
    ("Expand", [f32(3, 1), i64(2, 1, 4)], {}, {1}, "ort"),
    ("Tile", [X, i64(1, 2, 3)], {}, {1}, "ort"),
    ("Pad", [IMG, i64(0, 1, 2, 0, 0, 0, 1, 3), np.array(1.5, np.float32)], {}, {1, 2}, "ort"),
    ("Pad", [IMG, i64(0, 0, 2, 1, 0, 0, 1, 2)], {"mode": "reflect"}, {1}, "ort"),
    ("Pad", [IMG, i64(0, 0, 2, -1, 0, 0, 1, 2)], {"mode": "edge"}, {1}, "ort"),
    ("ConstantOfShape", [i64(2, 3)], {"value": np.array([7], np.int32)}, {0}, "ort"),
    ("Range", [np.array(1, np.int64), np.array(10, np.int64), np.array(3, np.int64)], {}, {0, 1, 2}, "ort"),
    ("Range", [np.array(1.0, np.float32), np.array(-2.0, np.float32), np.array(-0.7, np.float32)], {},
     {0, 1, 2}, "ort"),
    # cube
    ("MatMul", [f32(2, 5, 6), f32(6, 3)], {}, {1}, "ort"),
    ("MatMul", [f32(6), f32(2, 6, 3)], {}, set(), "ort"),
    ("Gemm", [f32(6, 5), f32(4, 6), f32(4)], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, {1, 2}, "ort"),
    ("Gemm", [f32(5, 6), f32(6, 4)], {}, {1}, "ort"),
    ("MatMulInteger", [np.array([[1, 200], [3, 4]], np.uint8), np.array([[5, 250], [7, 8]], np.uint8),
                       np.array(3, np.uint8), np.array(1, np.uint8)], {}, {1, 3}, "ort"),
]


@pytest.mark.parametrize("kind,inputs,attrs,consts,engine", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_native_kernel_matches_onnx(kind, inputs, attrs, consts, engine):
    assert lookup_kernel(kind) is not None, f"{kind} has no native kernel"
    g = ir_single(kind, inputs, attrs, consts=consts)
    got = run_ir(g, inputs)
    want = reference(kind, inputs, attrs, engine=engine, opset=20 if kind == "Gelu" else 18)
    tol = 1e-4 if kind in ("LRN", "Gelu", "Erf", "Mish") else 1e-5
    assert_close(got[0], want[0], rtol=tol, atol=tol)


def test_split_several_outputs():
    x = f32(2, 7)
    g = ir_single("Split", [x, i64(3, 4)], {"axis": 1}, consts={1},
                  result_types=[TensorType(DType.f32, (2, 3)), TensorType(DType.f32, (2, 4))])
    got = run_ir(g, [x, None])
    want = reference("Split", [x, i64(3, 4)], {"axis": 1}, n_outputs=2, engine="ort")
    for a, b in zip(got, want):
        assert_close(a, b)


def test_layernorm_mean_and_invstd_outputs():
    x = f32(2, 3, 4)
    t = [TensorType(DType.f32, (2, 3, 4)), TensorType(DType.f32, (2, 1, 1)), TensorType(DType.f32, (2, 1, 1))]
    g = ir_single("LayerNormalization", [x, f32(3, 4)], {"axis": 1}, consts={1}, result_types=t)
    got = run_ir(g, [x, None])
    want = reference("LayerNormalization", [x, g.value("c1").producer.attrs["value"]], {"axis": 1}, n_outputs=3)
    for a, b in zip(got, want):
        assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_opset9_softmax_coerces_to_2d():
    x = f32(2, 3, 4)
    g = ir_single("Softmax", [x], {"axis": 1, "opset": 9})
    g.attrs["opset"] = 9
    got = run_ir(g, [x])
    want = reference("Softmax", [x], {"axis": 1}, opset=9, engine="ort")
    assert_close(got[0], want[0])


@pytest.mark.parametrize("act", ["relu", "none"])
def test_fused_matmul_forms(act):
    x, w, b = f32(5, 6), f32(6, 3), f32(3)
    ref = x @ w + b
    g = ir_single("fused.matmul_add_relu" if act == "relu" else "fused.matmul_add", [x, w, b], consts={1, 2})
    got = run_ir(g, [x, None, None])[0]
    np.testing.assert_allclose(got, np.maximum(ref, 0) if act == "relu" else ref, rtol=1e-5, atol=1e-5)
    g = ir_single("fused.matmul_relu", [x, w], consts={1})
    np.testing.assert_allclose(run_ir(g, [x, None])[0], np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)


def test_fused_conv_relu_equals_conv_then_relu():
    x, w, b = f32(1, 4, 7, 7), f32(6, 4, 3, 3), f32(6)
    attrs = {"pads": [1, 1, 1, 1], "strides": [2, 2]}
    g = ir_single("fused.conv", [x, w, b], {**attrs, "act": "relu"}, consts={1, 2})
    got = run_ir(g, [x, None, None])[0]
    want = reference("Conv", [x, w, b], attrs)[0]
    assert_close(got, np.maximum(want, 0), rtol=1e-4, atol=1e-4)


# --- tile plans ---------------------------------------------------------------------------
# A Cube op's ``tile = [tm, tn, tk]`` (the tile pass's plan; ``tiles`` = the counts).
# Integer products run it block by block: each tm x tn output block summed over
# ceil(K / tk) K-tiles, one product each, ragged tails shorter.  A correct tiling
# gives the same numbers as one product, so the tests watch the products
# themselves: every np.matmul the run makes, by operand shape.
PLAN = {"tile": [16, 16, 16], "tiles": [3, 2, 3]}  # for [40, 33] x [33, 20]


@pytest.fixture
def products(monkeypatch):
    """(a.shape, b.shape) of every np.matmul call while a test runs."""
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    real = np.matmul

    def spy(a, b, *args, **kw):
        calls.append((np.shape(a), np.shape(b)))
        return real(a, b, *args, **kw)

    monkeypatch.setattr(np, "matmul", spy)
    return calls


def _run_watching(g, inputs, products) -> np.ndarray:
    sess = Session(build_executable(g, soc_version="Ascend310P3").to_bytes())
    products.clear()  # only the run's products
    return sess.run(None, {v.name: inputs[int(v.name[1:])] for v in g.inputs})[0]


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_matmul_runs_its_tile_plan_block_by_block(dtype, products):
    rng = np.random.RandomState(1)
    x = rng.randint(-1000, 1000, (40, 33)).astype(dtype)
    w = rng.randint(-1000, 1000, (33, 20)).astype(dtype)
    g = ir_single("MatMul", [x, w], PLAN, consts={1})
    got = _run_watching(g, [x, None], products)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, x @ w)
    # M = 40 -> 16, 16, 8; N = 20 -> 16, 4; K = 33 -> 16, 16, 1: 3 x 2 blocks of 3 K-tiles each
    want = Counter(((m, k), (k, n)) for m in (16, 16, 8) for n in (16, 4) for k in (16, 16, 1))
    assert Counter(products) == want, f"the run's products {Counter(products)} do not follow the plan {PLAN}"


def test_integer_matmul_without_a_plan_is_one_product(products):
    rng = np.random.RandomState(2)
    x = rng.randint(-1000, 1000, (40, 33)).astype(np.int64)
    w = rng.randint(-1000, 1000, (33, 20)).astype(np.int64)
    g = ir_single("MatMul", [x, w], {}, consts={1})
    np.testing.assert_array_equal(_run_watching(g, [x, None], products), x @ w)
    assert products == [((40, 33), (33, 20))]


def test_float_matmul_with_a_tile_plan_equals_the_plain_product():
    # float products run as one BLAS call whatever the plan (runtime.kernels.matmul):
    # the plan's K order would change only the rounding
    x, w = f32(40, 33), f32(33, 20)
    g = ir_single("MatMul", [x, w], PLAN, consts={1})
    np.testing.assert_allclose(run_ir(g, [x, None])[0], x @ w, rtol=1e-5, atol=1e-5)
