"""Element types and tensor types of the IR.

A `TensorType` is a dtype and a shape whose dimensions are ints or symbols
(``"N"``, ``"?"``).  It prints as MLIR does: ``tensor<1x3x224x224xf32>``,
``tensor<Nx64xf32>``, ``tensor<f32>`` for a scalar.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

__all__ = ["NONE_TYPE", "DType", "Dim", "TensorType"]


class DType(enum.Enum):
    """Element types, named as they print (``f32``, ``i8`` ...)."""

    f64 = "f64"
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    i64 = "i64"
    i32 = "i32"
    i16 = "i16"
    i8 = "i8"
    u64 = "u64"
    u32 = "u32"
    u16 = "u16"
    u8 = "u8"
    bool = "bool"
    str = "str"

    @property
    def numpy(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def itemsize(self) -> int:
        return 2 if self is DType.bf16 else self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.f64, DType.f32, DType.f16, DType.bf16)

    @property
    def is_int(self) -> bool:
        return self.name[0] in "iu"

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        dt = np.dtype(dtype)
        if dt.kind in "OUS":
            return cls.str
        try:
            return _FROM_NUMPY[dt]
        except KeyError:
            raise TypeError(f"no IR dtype for numpy dtype {dt}") from None

    @classmethod
    def from_onnx(cls, elem_type: int) -> DType:
        try:
            return _FROM_ONNX[elem_type]
        except KeyError:
            raise TypeError(f"no IR dtype for ONNX element type {elem_type}") from None

    @property
    def onnx(self) -> int:
        return _TO_ONNX[self]

    @property
    def onnx_name(self) -> str:
        """ONNX's name of the element type (``"float"``, ``"int64"``), as onnxruntime prints it."""
        return _ONNX_NAMES[self]


_TO_NUMPY = {
    DType.f64: np.dtype(np.float64),
    DType.f32: np.dtype(np.float32),
    DType.f16: np.dtype(np.float16),
    DType.bf16: np.dtype(np.float32),  # stored widened; no numpy bfloat16
    DType.i64: np.dtype(np.int64),
    DType.i32: np.dtype(np.int32),
    DType.i16: np.dtype(np.int16),
    DType.i8: np.dtype(np.int8),
    DType.u64: np.dtype(np.uint64),
    DType.u32: np.dtype(np.uint32),
    DType.u16: np.dtype(np.uint16),
    DType.u8: np.dtype(np.uint8),
    DType.bool: np.dtype(np.bool_),
    DType.str: np.dtype(object),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items() if k not in (DType.bf16, DType.str)}
# ONNX TensorProto.DataType values (stable across onnx releases).
_TO_ONNX = {
    DType.f32: 1, DType.u8: 2, DType.i8: 3, DType.u16: 4, DType.i16: 5, DType.i32: 6,
    DType.i64: 7, DType.str: 8, DType.bool: 9, DType.f16: 10, DType.f64: 11,
    DType.u32: 12, DType.u64: 13, DType.bf16: 16,
}
_FROM_ONNX = {v: k for k, v in _TO_ONNX.items()}
# onnxruntime's type strings (``NodeArg.type``): ``tensor(<name>)``
_ONNX_NAMES = {
    DType.f32: "float", DType.f64: "double", DType.f16: "float16", DType.bf16: "bfloat16", DType.i64: "int64",
    DType.i32: "int32", DType.i16: "int16", DType.i8: "int8", DType.u64: "uint64", DType.u32: "uint32",
    DType.u16: "uint16", DType.u8: "uint8", DType.bool: "bool", DType.str: "string",
}

Dim = int | str


@dataclass(frozen=True, slots=True)
class TensorType:
    """A ranked tensor type; a dim is a non-negative int or a symbol name."""

    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int:
        if not self.is_static:
            raise ValueError(f"{self} has symbolic dimensions")
        n = 1
        for d in self.shape:
            n *= d  # type: ignore[operator]
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def with_shape(self, shape: tuple[Dim, ...] | list[Dim]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        return f"tensor<{dims}{self.dtype.value}>"

    __repr__ = __str__


# The type of an absent optional operand (ONNX's empty input name).
NONE_TYPE = None
