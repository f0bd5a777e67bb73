"""The op declarations: every stage reads them, so they must hold together.

- every op kind the compiler can emit has a runtime kernel (native, or the AICPU
  fallback through onnx.reference for ONNX ops);
- a Cube kernel comes with a GEMM view, and the view is right on a sample op;
- quantization roles name integer ops that exist; epilogues name activations
  the Cube kernels apply;
- the random ops are never folded, anywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from ir.core import Graph
from ir.gemm import Gemm
from ir.registry import CUBE, VECTOR, all_ops, foldable, gemm_dims, lookup, nondeterministic
from ir.types import DType, TensorType
from runtime.kernels import lookup_kernel

OPS = all_ops()


def _onnx_reference_has(kind: str) -> bool:
    """The AICPU fallback (onnx.reference, through the runtime's own loader) runs `kind`."""
    from runtime.kernels.aicpu import _operator

    domain, _, name = kind.rpartition(".")
    try:
        _operator(domain, name, 21 if not domain else 5, None, [])
    except Exception:  # noqa: BLE001 - onnx.reference raises several kinds for an unknown op
        return False
    return True


@pytest.mark.parametrize("kind", sorted(k for k in OPS if k != "const"))
def test_every_declared_op_has_a_runtime_kernel(kind):
    if lookup_kernel(kind) is not None:
        return
    assert foldable_namespace(kind) and _onnx_reference_has(kind), (
        f"{kind} is declared (the compiler can emit it) but has no runtime kernel and no onnx.reference fallback")


def foldable_namespace(kind: str) -> bool:
    return kind.rsplit(".", 1)[0] not in ("fused", "quant")


@pytest.mark.parametrize("kind", sorted(k for k, d in OPS.items() if d.runs_on(CUBE)))
def test_cube_ops_declare_a_gemm_view(kind):
    assert OPS[kind].gemm is not None


def test_gemm_views_of_matmul_gemm_and_conv():
    g = Graph("t")
    x = g.add_input("x", TensorType(DType.f32, (2, 8, 16)))
    w = g.const(np.zeros((16, 4), np.float32), "w")
    mm = g.add_op("MatMul", [x, w])
    assert gemm_dims(mm) == Gemm("matmul", 2, 8, 16, 4, DType.f32)
    a = g.add_input("a", TensorType(DType.f32, (16, 8)))
    b = g.const(np.zeros((4, 16), np.float32), "b")
    gm = g.add_op("Gemm", [a, b], {"transA": 1, "transB": 1})
    assert gemm_dims(gm) == Gemm("matmul", 1, 8, 16, 4, DType.f32)
    img = g.add_input("img", TensorType(DType.f32, (1, 8, 10, 10)))
    k = g.const(np.zeros((6, 4, 3, 3), np.float32), "k")
    cv = g.add_op("Conv", [img, k], {"group": 2, "pads": [1, 1, 1, 1]})
    # implicit GEMM per group: M = N*OH*OW, K = C/g*KH*KW, N = OC/g
    assert gemm_dims(cv) == Gemm("conv", 2, 100, 36, 3, DType.f32)
    relu = g.add_op("Relu", [cv.result])
    assert gemm_dims(relu) is None


@pytest.mark.parametrize("kind", sorted(k for k, d in OPS.items() if d.quant is not None))
def test_quantization_roles_name_declared_integer_ops(kind):
    role = OPS[kind].quant
    assert role.to in OPS and OPS[role.to].runs_on(CUBE)
    assert OPS[kind].min_operands > role.weight


@pytest.mark.parametrize("kind", sorted(k for k, d in OPS.items() if d.epilogue))
def test_epilogues_are_activations_the_cube_kernels_apply(kind):
    from runtime.kernels.matmul import activate

    x = np.linspace(-4, 4, 17, dtype=np.float32)
    ref = lookup_kernel(kind).fn([x.copy()], {}, None)[0]
    np.testing.assert_allclose(activate(x.copy(), OPS[kind].epilogue), ref, rtol=1e-6, atol=1e-6)
    assert OPS[kind].runs_on(VECTOR)


@pytest.mark.parametrize("kind", ["RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"])
def test_random_ops_are_never_folded(kind):
    g = Graph("t")
    c = g.const(np.full((2, 3), 0.5, np.float32), "c")
    op = g.add_op(kind, [c], result_types=[TensorType(DType.f32, (2, 3))])
    assert nondeterministic(op) and not foldable(op)


def test_dropout_is_random_only_in_training_mode():
    g = Graph("t")
    x = g.const(np.ones((2, 3), np.float32), "x")
    inference = g.add_op("Dropout", [x])
    assert foldable(inference)
    ratio = g.const(np.array(0.5, np.float32), "ratio")
    on = g.const(np.array(True), "on")
    training = g.add_op("Dropout", [x, ratio, on])
    assert nondeterministic(training) and not foldable(training)
    off = g.const(np.array(False), "off")
    assert foldable(g.add_op("Dropout", [x, ratio, off]))
    mode = g.add_input("mode", TensorType(DType.bool, ()))
    assert not foldable(g.add_op("Dropout", [x, ratio, mode]))  # unknown until run time


def test_fused_and_quant_ops_are_not_folded_by_onnx():
    g = Graph("t")
    x = g.const(np.ones((2, 4), np.float32), "x")
    w = g.const(np.ones((4, 3), np.float32), "w")
    b = g.const(np.ones((3,), np.float32), "b")
    assert foldable(g.add_op("MatMul", [x, w]))
    assert not foldable(g.add_op("fused.matmul_add", [x, w, b]))
    assert lookup("const") is not None and not foldable(x.producer)
