"""Op declarations reject what no kernel can run: the frontend, the verifier and the `.om`
loader all call these inference functions, so an attribute or operand out of range is one
`TypeInferenceError` naming the problem, never a later internal error (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from ir.core import Op
from ir.registry import TypeInferenceError, infer_types
from ir.types import DType, TensorType


def _const(arr: np.ndarray):
    arr = np.asarray(arr)
    return Op("const", [], [TensorType(DType.from_numpy(arr.dtype), arr.shape)], {"value": arr}, None).result


def _input(*shape: int, dtype: DType = DType.f32):
    return Op("const", [], [TensorType(dtype, shape)], {"value": np.zeros(shape, dtype.numpy)}, None).result


def _infer(kind: str, operands, **attrs):
    from ir.registry import lookup

    op = Op(kind, list(operands), [TensorType(DType.f32, ())], lookup(kind).with_defaults(attrs), None)
    return infer_types(op)


BAD = [
    ("Softmax", lambda: [_input(2, 3)], {"axis": 2**40}, "axis 1099511627776 out of range for rank 2"),
    ("LogSoftmax", lambda: [_input(2, 3)], {"axis": -3}, "axis -3 out of range"),
    ("Flatten", lambda: [_input(2, 3)], {"axis": 3}, "Flatten: axis 3 out of range [-2, 2]"),
    ("Gemm", lambda: [_input(2, 8), _input(8, 16)], {"transB": 2**40}, "Gemm: inner dimensions differ"),
    ("Gemm", lambda: [_input(2, 8, 1), _input(8, 16)], {}, "must be matrices"),
    ("Gather", lambda: [_input(2, 3), _const(np.array([0, 3]))], {"axis": 1}, "constant indices in [0, 3]"),
    ("Gather", lambda: [_input(2, 3), _const(np.array([-3]))], {"axis": 0}, "for an axis of 2"),
    ("Transpose", lambda: [_input(2, 3)], {"perm": [0, 0]}, "not a permutation of the 2 axes"),
    ("Concat", lambda: [_input(2, 3), _input(4, 3)], {"axis": 1}, "does not concatenate"),
    ("Conv", lambda: [_input(1, 3, 8, 8), _input(4, 1, 3, 3)], {"group": 2}, "(group 2) for an input"),
    ("Pad", lambda: [_input(2, 3), _const(np.array([0, -2, 0, -2]))], {}, "crop axis 1 of 3 below 0"),
    ("Conv", lambda: [_input(1, 3, 8, 8), _input(4, 3, 3, 3), _input(1, 3, 8, 8)], {}, "a bias tensor<1x3x8x8xf32>"),
    ("ReduceMean", lambda: [_input(2, 3)], {"axes": [1], "keepdims": 3}, "keepdims must be 0 or 1, got 3"),
    ("Conv", lambda: [_input(1, 3, 8, 8), _input(4, 3, 3, 3)], {"kernel_shape": [2, 3]}, "is not the weight's window"),
    ("ArgMax", lambda: [_input(2, 3)], {"keepdims": -1}, "keepdims must be 0 or 1, got -1"),
]


@pytest.mark.parametrize("kind, operands, attrs, says", BAD, ids=[f"{b[0]}-{b[3][:24]}" for b in BAD])
def test_inference_rejects_what_no_kernel_can_run(kind, operands, attrs, says):
    with pytest.raises(TypeInferenceError) as e:
        _infer(kind, operands(), **attrs)
    assert says in str(e.value), str(e.value)


GOOD = [
    ("Softmax", lambda: [_input(2, 3)], {"axis": -2}, (2, 3)),
    ("Flatten", lambda: [_input(2, 3)], {"axis": 2}, (6, 1)),
    ("Flatten", lambda: [_input(2, 3)], {"axis": -2}, (1, 6)),
    ("Gemm", lambda: [_input(2, 8), _input(16, 8)], {"transB": 1}, (2, 16)),
    ("Gemm", lambda: [_input(8, 2), _input(8, 16)], {"transA": 7}, (2, 16)),  # any nonzero flag transposes
    ("Gather", lambda: [_input(2, 3), _const(np.array([-3, 2]))], {"axis": 1}, (2, 2)),
    ("Concat", lambda: [_input(2, 3), _input(2, 5)], {"axis": 1}, (2, 8)),
    ("Conv", lambda: [_input(1, 4, 8, 8), _input(6, 2, 3, 3)], {"group": 2}, (1, 6, 6, 6)),
    ("Pad", lambda: [_input(2, 3), _const(np.array([0, -3, 1, 0]))], {}, (3, 0)),
    ("Conv", lambda: [_input(1, 3, 8, 8), _input(4, 3, 3, 3), _input(4)], {}, (1, 4, 6, 6)),
    ("ReduceMean", lambda: [_input(2, 3)], {"axes": [1], "keepdims": 0}, (2,)),
]


@pytest.mark.parametrize("kind, operands, attrs, shape", GOOD, ids=[f"{g[0]}-{g[3]}" for g in GOOD])
def test_inference_keeps_the_edge_cases_that_are_valid(kind, operands, attrs, shape):
    assert _infer(kind, operands(), **attrs)[0].shape == shape
