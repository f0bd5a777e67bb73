"""INT8 arithmetic and the runtime kernels of the ``quant.*`` ops.

The scheme is symmetric INT8 with zero point 0 and range [-127, 127] (-128 is
never produced, so negation is closed and the range is symmetric):

    scale = amax / 127                    (amax = 0 -> scale 1: an all-zero tensor)
    q     = clip(round_half_even(x / scale), -127, 127)
    x'    = q * scale                     |x' - x| <= scale / 2 while |x| <= amax

Weights use one scale per output channel (`axis`), activations one per tensor.
This module is pure NumPy and imports nothing from the compiler: the quantize pass
imports the same `quantize` / `scale_from_amax` so the weights it stores and the
activations the runtime quantizes agree bit for bit.

Integer matrix products are exact: a K-slice of at most 256 int8 x int8 products
sums to at most 256 * 128 * 128 = 2**22 < 2**24, so float32 BLAS computes it
exactly; the slices are accumulated in int32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from runtime.kernels import kernel
from runtime.kernels.conv import conv_windows
from runtime.kernels.matmul import activate
from runtime.kernels.tiling import tiled_matmul

__all__ = [
    "KERNELS",
    "K_TILE",
    "QMAX",
    "conv_windows",
    "dequantize",
    "epilogue",
    "int8_conv",
    "int8_matmul",
    "quantize",
    "requantize",
    "scale_from_amax",
]

QMAX = 127
K_TILE = 256  # largest K-slice whose int8 dot products float32 sums exactly

Array = np.ndarray


def scale_from_amax(amax: float | Array) -> float | Array:
    """``amax / 127``; channels (or tensors) that are all zero get scale 1."""
    a = np.asarray(amax, dtype=np.float64)
    s = np.where(a > 0, a / QMAX, 1.0)
    return float(s) if s.ndim == 0 else s.astype(np.float32)


def _along(scale: float | Array, axis: int, ndim: int) -> Array:
    """`scale` shaped to broadcast along `axis` of an `ndim`-d tensor."""
    s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 0 or ndim == 0:
        return s
    shape = [1] * ndim
    shape[axis % ndim] = s.size
    return s.reshape(shape)


def quantize(x: Array, scale: float | Array, axis: int = 0) -> Array:
    """float -> int8: ``clip(rint(x / scale), -127, 127)`` (round half to even)."""
    x = np.asarray(x, dtype=np.float32)
    q = np.rint(x / _along(scale, axis, x.ndim))
    return np.clip(q, -QMAX, QMAX).astype(np.int8)


def dequantize(q: Array, scale: float | Array, axis: int = 0, dtype: Any = np.float32) -> Array:
    """int -> float: ``q * scale``."""
    q = np.asarray(q)
    return (q.astype(np.float32) * _along(scale, axis, q.ndim)).astype(dtype, copy=False)


def requantize(q: Array, scale: float, to_scale: float) -> Array:
    """int8 at `scale` -> int8 at `to_scale`."""
    return quantize(dequantize(q, scale), to_scale)


# --- exact integer products ---------------------------------------------------------------
def int8_matmul(a: Array, b: Array, tile: Sequence[int] | None = None) -> Array:
    """Exact ``a @ b`` for int8 `a` [..., M, K] and `b` [..., K, N], as int32.

    Each K-slice of at most 256 runs as a float32 BLAS product (exact, see the
    module docstring) and the slices are summed in int32.  With a tile plan
    (``tile = [tm, tn, tk]``) the product goes through the Cube tiler, which
    clamps tk to the exact bound itself.
    """
    if tile:
        return tiled_matmul(a, b, [int(t) for t in tile][:3])
    acc: Array | None = None
    for k0 in range(0, max(a.shape[-1], 1), K_TILE):
        part = a[..., k0 : k0 + K_TILE].astype(np.float32) @ b[..., k0 : k0 + K_TILE, :].astype(np.float32)
        acc = part.astype(np.int32) if acc is None else acc + part.astype(np.int32)
    assert acc is not None
    return acc


def int8_conv(x: Array, w: Array, attrs: dict[str, Any], tile: Sequence[int] | None = None) -> Array:
    """Exact int8 ONNX Conv (``[N, C, *sp]`` x ``[M, C/group, *k]`` -> int32 ``[N, M, *out]``)
    as implicit GEMM over im2col columns."""
    nsp = x.ndim - 2
    kernel = list(attrs.get("kernel_shape") or w.shape[2:])
    group = int(attrs.get("group", 1) or 1)
    cols = conv_windows(x, attrs, kernel)  # N, C, *out, *k (zero point 0: zero padding is exact)
    n, c = x.shape[:2]
    out_sp = cols.shape[2 : 2 + nsp]
    p = int(np.prod(out_sp, dtype=np.int64))
    kk = int(np.prod(kernel, dtype=np.int64))
    m = w.shape[0]
    cg, mg = c // group, m // group
    # N, *out, C, *k : one row per output position
    perm = (0, *range(2, 2 + nsp), 1, *range(2 + nsp, 2 + 2 * nsp))
    rows = cols.transpose(perm).reshape(n * p, c * kk)
    outs = []
    for g in range(group):
        a = rows[:, g * cg * kk : (g + 1) * cg * kk]
        b = w[g * mg : (g + 1) * mg].reshape(mg, cg * kk).T
        outs.append(int8_matmul(a, b, tile))
    y = np.concatenate(outs, axis=1) if group > 1 else outs[0]  # N*P, M
    return y.reshape(n, *out_sp, m).transpose(0, nsp + 1, *range(1, nsp + 1))


def epilogue(acc: Array, bias: Array | None, w_scale: Array, axis: int, attrs: dict[str, Any]) -> Array:
    """int32 accumulator -> (+ int32 bias) -> f32 (dequantize) -> act -> f32 | i8 | i32."""
    if bias is not None:
        acc = acc + _along(np.asarray(bias).reshape(-1), axis, acc.ndim).astype(np.int32)
    out = attrs.get("out", "f32")
    if out == "i32":
        return acc.astype(np.int32, copy=False)
    mult = np.float32(attrs["x_scale"]) * np.asarray(w_scale, np.float32).reshape(-1)
    y = dequantize(acc, mult, axis)
    y = activate(y, attrs.get("act", "none"))  # any epilogue the declarations allow, as the float Cube ops
    if out == "i8":
        return quantize(y, float(attrs["y_scale"]))
    return y


# --- kernels (runtime protocol: fn(inputs, attrs, out) -> list[np.ndarray]) ------------------
def _emit(result: Array, out: list[Array] | None) -> list[Array]:
    if out and out[0] is not None and out[0].shape == result.shape:
        np.copyto(out[0], result, casting="unsafe")
        return [out[0]]
    return [result]


def k_quantize(inputs: list[Array | None], attrs: dict[str, Any], out: list[Array] | None) -> list[Array]:
    return _emit(quantize(inputs[0], attrs["scale"], int(attrs.get("axis", 0))), out)


def k_dequantize(inputs: list[Array | None], attrs: dict[str, Any], out: list[Array] | None) -> list[Array]:
    dt = {"f32": np.float32, "f16": np.float16, "f64": np.float64}[attrs.get("to", "f32")]
    return _emit(dequantize(inputs[0], attrs["scale"], int(attrs.get("axis", 0)), dt), out)


def k_requantize(inputs: list[Array | None], attrs: dict[str, Any], out: list[Array] | None) -> list[Array]:
    return _emit(requantize(inputs[0], float(attrs["scale"]), float(attrs["to_scale"])), out)


def k_matmul(inputs: list[Array | None], attrs: dict[str, Any], out: list[Array] | None) -> list[Array]:
    x, w, b, ws = inputs
    acc = int8_matmul(x, w, attrs.get("tile"))
    return _emit(epilogue(acc, b, ws, -1, attrs), out)


def k_conv(inputs: list[Array | None], attrs: dict[str, Any], out: list[Array] | None) -> list[Array]:
    x, w, b, ws = inputs
    acc = int8_conv(x, w, attrs, attrs.get("tile"))
    return _emit(epilogue(acc, b, ws, 1, attrs), out)


KERNELS: dict[str, Callable[..., list[Array]]] = {
    "quant.quantize": k_quantize,
    "quant.dequantize": k_dequantize,
    "quant.requantize": k_requantize,
    "quant.matmul": k_matmul,
    "quant.conv": k_conv,
}


for _kind, _fn in KERNELS.items():
    kernel(_kind)(_fn)
