"""Cube kernels: MatMul, Gemm, MatMulInteger, Conv, ConvTranspose and the fused forms.

Conv is an implicit GEMM: the padded input is viewed as sliding windows
(``sliding_window_view``, no copy), laid out once as columns ``[N, G, Cg*K, L]``
and multiplied by the weights ``[G, Mg, Cg*K]`` in one batched BLAS call whose
result is already NCHW (``[N, G, Mg, L]`` = ``[N, M, *out]``), written straight
into the arena view.  1x1 stride-1 convs skip the column copy entirely;
depthwise convs accumulate kernel taps instead (G tiny GEMVs would be slower).

When a Cube op carries a ``tile`` plan, the product goes through
``runtime.kernels.tiling.tiled_matmul`` (owned by the tile pass) if present.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from runtime.kernels import kernel, slot

__all__ = ["conv", "conv_pads", "conv_transpose", "matmul"]

_tiled_fn: Any = False  # False: not looked up yet; None: not available


def _tiled_matmul():
    global _tiled_fn
    if _tiled_fn is False:
        try:
            from runtime.kernels.tiling import tiled_matmul
        except ImportError:
            tiled_matmul = None
        _tiled_fn = tiled_matmul
    return _tiled_fn


def _fits(o: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return o is not None and o.shape == shape and o.dtype == dtype


def matmul(a: np.ndarray, b: np.ndarray, attrs: dict[str, Any], o: np.ndarray | None = None) -> np.ndarray:
    """a @ b (ONNX MatMul = numpy matmul), tile by tile when the op has a plan."""
    tile = attrs.get("tile")
    if tile and a.ndim >= 2 and b.ndim >= 2:
        fn = _tiled_matmul()
        if fn is not None:
            r = np.asarray(fn(a, b, list(tile)))
            if o is not None and o.shape == r.shape:
                np.copyto(o, r, casting="unsafe")
                return o
            return r
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) if a.ndim >= 2 and b.ndim >= 2 else None
    if shape is not None:
        full = (*shape, a.shape[-2], b.shape[-1])
        dt = np.result_type(a, b)
        if _fits(o, full, dt):
            return np.matmul(a, b, out=o)
    return np.matmul(a, b)


@kernel("MatMul")
def _matmul(inputs, attrs, out):
    return [matmul(inputs[0], inputs[1], attrs, slot(out, 0))]


@kernel("MatMulInteger")
def _matmul_integer(inputs, attrs, out):
    a, b = inputs[0], inputs[1]
    azp = inputs[2] if len(inputs) > 2 else None
    bzp = inputs[3] if len(inputs) > 3 else None
    # float64 products of 8-bit values summed exactly (|sum| < 2^53) -> BLAS speed
    af = a.astype(np.float64)
    bf = b.astype(np.float64)
    if azp is not None:
        af -= azp.astype(np.float64).reshape(-1, 1) if azp.ndim == 1 and azp.size > 1 else azp.astype(np.float64)
    if bzp is not None:
        bf -= bzp.astype(np.float64)
    return [matmul(af, bf, attrs).astype(np.int32)]


def _epilogue(r: np.ndarray, bias: np.ndarray | None, act: str, beta: float = 1.0) -> np.ndarray:
    if bias is not None:
        if beta == 1.0:
            np.add(r, bias, out=r, casting="unsafe")
        elif beta != 0.0:
            np.add(r, bias * r.dtype.type(beta), out=r, casting="unsafe")
    return _activate(r, act)


def _activate(r: np.ndarray, act: str | None) -> np.ndarray:
    act = (act or "none").lower()
    if act == "none":
        return r
    if act == "relu":
        return np.maximum(r, 0, out=r)
    from runtime.kernels.elementwise import UNARY_BY_ACT

    fn = UNARY_BY_ACT.get(act)
    if fn is None:
        raise NotImplementedError(f"fused activation {act!r} has no kernel")
    r[...] = fn(r)
    return r


@kernel("Gemm")
def _gemm(inputs, attrs, out):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    r = matmul(a, b, attrs, slot(out, 0))
    alpha = float(attrs.get("alpha", 1.0))
    if alpha != 1.0:
        r *= r.dtype.type(alpha)
    return [_epilogue(r, c, "none", float(attrs.get("beta", 1.0)))]


@kernel("fused.matmul_add_relu")
def _fused_mar(inputs, attrs, out):
    r = matmul(inputs[0], inputs[1], attrs, slot(out, 0))
    return [_epilogue(r, inputs[2], attrs.get("act") or "relu")]


@kernel("fused.matmul_add")
def _fused_ma(inputs, attrs, out):
    r = matmul(inputs[0], inputs[1], attrs, slot(out, 0))
    return [_epilogue(r, inputs[2], attrs.get("act") or "none")]


@kernel("fused.matmul_relu")
def _fused_mr(inputs, attrs, out):
    r = matmul(inputs[0], inputs[1], attrs, slot(out, 0))
    return [_activate(r, attrs.get("act") or "relu")]


# --- convolution ------------------------------------------------------------------------
def conv_pads(attrs: dict[str, Any], sp: tuple[int, ...], k: tuple[int, ...]) -> tuple[list, list, list]:
    """(strides, dilations, pads) with ONNX defaults; auto_pad resolved to explicit pads."""
    nsp = len(sp)
    s = list(attrs.get("strides") or [1] * nsp)
    d = list(attrs.get("dilations") or [1] * nsp)
    p = list(attrs.get("pads") or [0] * (2 * nsp))
    auto = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nsp):
            o = -(-sp[i] // s[i])
            total = max((o - 1) * s[i] + (k[i] - 1) * d[i] + 1 - sp[i], 0)
            small, big = total // 2, total - total // 2
            p[i], p[i + nsp] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        p = [0] * (2 * nsp)
    return s, d, p


def _pad_input(x: np.ndarray, p: list[int], value: float = 0) -> np.ndarray:
    nsp = x.ndim - 2
    if not any(p):
        return x
    shape = x.shape[:2] + tuple(x.shape[2 + i] + p[i] + p[i + nsp] for i in range(nsp))
    xp = np.full(shape, value, dtype=x.dtype) if value != 0 else np.zeros(shape, dtype=x.dtype)
    xp[(slice(None), slice(None), *(slice(p[i], p[i] + x.shape[2 + i]) for i in range(nsp)))] = x
    return xp


def _windows(xp: np.ndarray, k, s, d, osz) -> np.ndarray:
    """View [N, C, *out, *k] of the kernel taps (no copy)."""
    nsp = xp.ndim - 2
    keff = [(k[i] - 1) * d[i] + 1 for i in range(nsp)]
    win = sliding_window_view(xp, keff, axis=tuple(range(2, 2 + nsp)))
    idx = (slice(None), slice(None), *(slice(0, (osz[i] - 1) * s[i] + 1, s[i]) for i in range(nsp)),
           *(slice(None, None, d[i]) for i in range(nsp)))
    return win[idx]


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict[str, Any],
         o: np.ndarray | None = None, act: str = "none") -> np.ndarray:
    n, c = x.shape[:2]
    sp = x.shape[2:]
    nsp = len(sp)
    m = w.shape[0]
    k = tuple(w.shape[2:])
    g = int(attrs.get("group", 1) or 1)
    cg, mg = c // g, m // g
    s, d, p = conv_pads(attrs, sp, k)
    osz = tuple((sp[i] + p[i] + p[i + nsp] - (k[i] - 1) * d[i] - 1) // s[i] + 1 for i in range(nsp))
    length = int(np.prod(osz, dtype=np.int64))
    oshape = (n, m, *osz)
    dt = np.result_type(x, w)
    res = o if _fits(o, oshape, dt) and o.flags.c_contiguous else np.empty(oshape, dt)
    # the tile plan only bounds Cube block sizes: a depthwise conv gives the same numbers tap by tap
    if cg == 1 and mg == 1 and g > 1:
        _depthwise(_pad_input(x, p), w, k, s, d, osz, res)
    else:
        kk = int(np.prod(k, dtype=np.int64))
        if all(v == 1 for v in k) and not any(p):
            xs = x[(slice(None), slice(None), *(slice(None, None, st) for st in s))] if any(v != 1 for v in s) else x
            cols = np.ascontiguousarray(xs).reshape(n, g, cg, length)
        else:
            win = _windows(_pad_input(x, p), k, s, d, osz)
            perm = (0, 1, *range(2 + nsp, 2 + 2 * nsp), *range(2, 2 + nsp))
            cols = np.ascontiguousarray(win.transpose(perm)).reshape(n, g, cg * kk, length)
        wm = w.reshape(g, mg, cg * kk)
        r4 = res.reshape(n, g, mg, length)
        if attrs.get("tile") and g == 1 and _tiled_matmul() is not None:
            # the plan is for the implicit GEMM [pixels, Cin*K] x [Cin*K, Cout]; it runs as its
            # transpose W[Cout, Cin*K] x cols[Cin*K, pixels] with the tile sizes swapped, the
            # same orientation as the untiled product
            tm, tn, tk = attrs["tile"]
            for i in range(n):
                _tiled_matmul()(wm[0], cols[i, 0], [tn, tm, tk], out=r4[i, 0])
        else:
            np.matmul(wm, cols, out=r4)
    if b is not None:
        r3 = res.reshape(n, m, length)
        np.add(r3, b.reshape(m, 1), out=r3)
    return _activate(res, act)


def _depthwise(xp: np.ndarray, w: np.ndarray, k, s, d, osz, res: np.ndarray) -> None:
    """out[n, c] = sum over taps of w[c, tap] * x[n, c, o*s + tap*d]: one pass per tap."""
    nsp = len(k)
    c = w.shape[0]
    wf = w.reshape(c, -1)
    tmp = np.empty_like(res)
    for t, tap in enumerate(itertools.product(*(range(v) for v in k))):
        sl = (slice(None), slice(None),
              *(slice(tap[i] * d[i], tap[i] * d[i] + (osz[i] - 1) * s[i] + 1, s[i]) for i in range(nsp)))
        wt = wf[:, t].reshape((c,) + (1,) * nsp)
        if t == 0:
            np.multiply(xp[sl], wt, out=res)
        else:
            np.multiply(xp[sl], wt, out=tmp)
            res += tmp


@kernel("Conv")
def _conv(inputs, attrs, out):
    return [conv(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, attrs, slot(out, 0))]


@kernel("fused.conv")
def _fused_conv(inputs, attrs, out):
    return [conv(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, attrs, slot(out, 0),
                 attrs.get("act", "none"))]


def conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict[str, Any]) -> np.ndarray:
    """Col2im: per group W^T @ x gives every tap's contribution; taps are scatter-added."""
    n, c = x.shape[:2]
    sp = x.shape[2:]
    nsp = len(sp)
    g = int(attrs.get("group", 1) or 1)
    cg, mg = c // g, w.shape[1]
    m = mg * g
    k = tuple(attrs.get("kernel_shape") or w.shape[2:])
    s = list(attrs.get("strides") or [1] * nsp)
    d = list(attrs.get("dilations") or [1] * nsp)
    p = list(attrs.get("pads") or [0] * (2 * nsp))
    op = list(attrs.get("output_padding") or [0] * nsp)
    full = [s[i] * (sp[i] - 1) + (k[i] - 1) * d[i] + 1 for i in range(nsp)]
    auto = attrs.get("auto_pad", "NOTSET")
    oshape_attr = attrs.get("output_shape")
    if oshape_attr:
        want = list(oshape_attr)[-nsp:]
        for i in range(nsp):
            total = full[i] + op[i] - want[i]
            if auto == "SAME_UPPER":
                p[i], p[i + nsp] = total // 2, total - total // 2
            else:
                p[i], p[i + nsp] = total - total // 2, total // 2
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(nsp):
            total = max(full[i] + op[i] - sp[i] * s[i], 0)
            if auto == "SAME_UPPER":
                p[i], p[i + nsp] = total // 2, total - total // 2
            else:
                p[i], p[i + nsp] = total - total // 2, total // 2
    osz = [full[i] + op[i] - p[i] - p[i + nsp] for i in range(nsp)]
    kk = int(np.prod(k, dtype=np.int64))
    length = int(np.prod(sp, dtype=np.int64))
    wt = w.reshape(g, cg, mg * kk).transpose(0, 2, 1)  # [G, Mg*K, Cg]
    cols = np.matmul(wt, x.reshape(n, g, cg, length)).reshape(n, m, *k, *sp)
    ext = [max(full[i], p[i] + osz[i]) for i in range(nsp)]
    buf = np.zeros((n, m, *ext), dtype=cols.dtype)
    for tap in itertools.product(*(range(v) for v in k)):
        sl = (slice(None), slice(None),
              *(slice(tap[i] * d[i], tap[i] * d[i] + (sp[i] - 1) * s[i] + 1, s[i]) for i in range(nsp)))
        buf[sl] += cols[(slice(None), slice(None), *tap)]
    res = buf[(slice(None), slice(None), *(slice(p[i], p[i] + osz[i]) for i in range(nsp)))]
    if b is not None:
        res = res + b.reshape((m,) + (1,) * nsp)
    return res


@kernel("ConvTranspose")
def _conv_transpose(inputs, attrs, out):
    return [conv_transpose(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, attrs)]
