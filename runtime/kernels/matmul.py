"""Cube kernels: MatMul, Gemm, MatMulInteger, Conv, ConvTranspose and the fused forms.

Conv is an implicit GEMM ``W[Cout, Cin*K] x cols[Cin*K, pixels]`` per image: the
padded input's kernel taps are copied once into a column buffer (one strided
copy per tap) and multiplied by the weights in one BLAS call whose result is
already NCHW, written straight into the arena view.  1x1 stride-1 convs use the
input itself as the column matrix (no copy); depthwise convs accumulate kernel
taps instead (G tiny GEMVs would be slower); 3x3 stride-1 convs with enough
channels run as Winograd F(2x2, 3x3) (`runtime.kernels.winograd`, 2.25x fewer
products).  Column and padding buffers come
from the session's scratch (``attrs["_scratch"]``, grown once and reused by every
step and run) or are allocated when the kernel runs outside a session.

f16 operands are widened to f32 before BLAS and the result is rounded back to
f16 once at the end (after bias and activation), as the Cube accumulates f16
products in its f32 L0C buffer (numpy's own f16 matmul rounds every partial
sum and does not use BLAS).

Tile plans: a Cube op's ``tile = [tm, tn, tk]`` is how the Cube blocks the
product (it drives the cost model and the report).  Float products run here as
one BLAS call, which blocks for the CPU's caches itself: the plan's K order
changes only rounding, and splitting into 256-blocks made the float Cube ops
6-10% slower (resnet50, vgg19).  Integer operands run the plan tile by tile
(``runtime.kernels.tiling.tiled_matmul``): there the K-tile bounds the int32
partial sums, which the plan promises.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from runtime.kernels import broadcast_ufunc, kernel, slot
from runtime.kernels.elementwise import relu
from runtime.kernels.winograd import winograd_applies, winograd_conv3x3, winograd_weights

__all__ = ["CUBE_KERNELS", "Scratch", "conv", "conv_pads", "conv_transpose", "matmul", "relu_"]

# kernels that take scratch buffers from attrs["_scratch"] (the session adds it to their steps)
CUBE_KERNELS = frozenset({"MatMul", "Gemm", "Conv", "fused.conv", "fused.matmul_add_relu",
                          "fused.matmul_add", "fused.matmul_relu"})

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


class Scratch:
    """Grow-only work buffers shared by the steps of one session.

    Steps run one at a time, so every step may use buffer ``key`` freely; the
    first run sizes them, later runs allocate nothing.  Not thread-safe (nor is
    the session's arena).
    """

    def __init__(self) -> None:
        self._bufs: dict[int, np.ndarray] = {}

    def get(self, key: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        buf = self._bufs.get(key)
        if buf is None or buf.size < nbytes:
            buf = self._bufs[key] = np.empty(max(nbytes, 64), dtype=np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)

    @property
    def nbytes(self) -> int:
        return sum(b.size for b in self._bufs.values())


def _scratch(attrs: dict[str, Any], key: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    s = attrs.get("_scratch")
    if s is None:
        return np.empty(shape, dtype)
    return s.get(key, shape, dtype)


def _acc_dtype(dt: np.dtype) -> np.dtype:
    """The dtype BLAS runs in: f16 widens to f32 (the Cube's f32 accumulator)."""
    return np.dtype(np.float32) if dt == np.float16 else dt


def _fits(o: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    return o is not None and o.shape == shape and o.dtype == dtype


def matmul(a: np.ndarray, b: np.ndarray, attrs: dict[str, Any], o: np.ndarray | None = None,
           epilogue: Any = None) -> np.ndarray:
    """a @ b (ONNX MatMul = numpy matmul) following the op's tile plan.

    `epilogue(r)` (bias, activation) runs in place on the accumulator before an
    f16 result is rounded; the result is written into `o` when it fits.
    """
    dt = np.result_type(a, b)
    tile = attrs.get("tile")
    if dt.kind not in "fc":  # integers: the exact tile loop / numpy's integer matmul
        if tile and a.ndim >= 2 and b.ndim >= 2 and _tiled_matmul() is not None:
            r = np.asarray(_tiled_matmul()(a, b, list(tile)))
        else:
            r = np.matmul(a, b)
        if epilogue is not None:
            r = epilogue(r)
        if o is not None and o.shape == r.shape:
            np.copyto(o, r, casting="unsafe")
            return o
        return r
    acc_dt = _acc_dtype(dt)
    sq_a, sq_b = a.ndim == 1, b.ndim == 1
    a2 = a[None, :] if sq_a else a
    b2 = b[:, None] if sq_b else b
    full = (*np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]), a2.shape[-2], b2.shape[-1])
    shape = full[:-2] + full[-2:-1] * (not sq_a) + full[-1:] * (not sq_b)
    if a2.dtype != acc_dt:
        a2 = a2.astype(acc_dt)
    if b2.dtype != acc_dt:
        b2 = b2.astype(acc_dt)
    fits = o is not None and o.shape == shape
    direct = fits and o.dtype == acc_dt
    if direct:  # o viewed with the squeezed 1-D dims restored (always a view)
        r = o
        if sq_a:
            r = np.expand_dims(r, -2)
        if sq_b:
            r = np.expand_dims(r, -1)
    elif acc_dt != dt:
        r = _scratch(attrs, 2, full, acc_dt)
    else:
        r = np.empty(full, acc_dt)
    np.matmul(a2, b2, out=r)
    if sq_b:  # back to the result's shape (views)
        r = r[..., 0]
    if sq_a:
        r = r[..., 0, :]
    if epilogue is not None:
        epilogue(r)
    if direct:
        return o
    if fits:
        np.copyto(o, r, casting="unsafe")
        return o
    return r.astype(dt) if r.dtype != dt else r


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


def relu_(r: np.ndarray) -> np.ndarray:
    """max(r, 0) in place (`runtime.kernels.elementwise.relu`)."""
    return relu(r, r)


def _activate(r: np.ndarray, act: str | None) -> np.ndarray:
    act = (act or "none").lower()
    if act == "none":
        return r
    if act == "relu":
        return relu_(r)
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
    alpha = float(attrs.get("alpha", 1.0))
    beta = float(attrs.get("beta", 1.0))

    def epi(r: np.ndarray) -> np.ndarray:
        if alpha != 1.0:
            r *= r.dtype.type(alpha)
        return _epilogue(r, c, "none", beta)

    return [matmul(a, b, attrs, slot(out, 0), epi)]


@kernel("fused.matmul_add_relu")
def _fused_mar(inputs, attrs, out):
    act = attrs.get("act") or "relu"
    return [matmul(inputs[0], inputs[1], attrs, slot(out, 0), lambda r: _epilogue(r, inputs[2], act))]


@kernel("fused.matmul_add")
def _fused_ma(inputs, attrs, out):
    act = attrs.get("act") or "none"
    return [matmul(inputs[0], inputs[1], attrs, slot(out, 0), lambda r: _epilogue(r, inputs[2], act))]


@kernel("fused.matmul_relu")
def _fused_mr(inputs, attrs, out):
    act = attrs.get("act") or "relu"
    return [matmul(inputs[0], inputs[1], attrs, slot(out, 0), lambda r: _activate(r, act))]


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


def _pad_into(x: np.ndarray, p: list[int], lead: int, buf: np.ndarray) -> np.ndarray:
    """x (with `lead` leading non-spatial dims) zero-padded into `buf`; only the
    borders are cleared (buf is reused scratch)."""
    nsp = x.ndim - lead
    pre = (slice(None),) * lead
    for i in range(nsp):
        if p[i]:
            buf[(*pre, *(slice(None),) * i, slice(0, p[i]))] = 0
        if p[i + nsp]:
            buf[(*pre, *(slice(None),) * i, slice(p[i] + x.shape[lead + i], None))] = 0
    buf[(*pre, *(slice(p[i], p[i] + x.shape[lead + i]) for i in range(nsp)))] = x
    return buf


def _windows(xp: np.ndarray, k, s, d, osz) -> np.ndarray:
    """View [N, C, *out, *k] of the kernel taps (no copy)."""
    nsp = xp.ndim - 2
    keff = [(k[i] - 1) * d[i] + 1 for i in range(nsp)]
    win = sliding_window_view(xp, keff, axis=tuple(range(2, 2 + nsp)))
    idx = (slice(None), slice(None), *(slice(0, (osz[i] - 1) * s[i] + 1, s[i]) for i in range(nsp)),
           *(slice(None, None, d[i]) for i in range(nsp)))
    return win[idx]


def _im2col(xp: np.ndarray, k, s, d, osz, cols: np.ndarray) -> None:
    """cols[C, *k, *out] = the padded image xp[C, *sp] at every kernel tap (the
    [C*K, pixels] column matrix of the implicit GEMM), in one strided copy from
    the sliding-window view (a little faster than one copy per tap)."""
    nsp = len(k)
    win = _windows(xp[None], k, s, d, osz)[0]  # [C, *out, *k], no copy
    np.copyto(cols, win.transpose(0, *range(1 + nsp, 1 + 2 * nsp), *range(1, 1 + nsp)))


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
    length = math.prod(osz)
    oshape = (n, m, *osz)
    dt = np.result_type(x, w)
    acc_dt = _acc_dtype(dt)
    res = o if _fits(o, oshape, dt) and o.flags.c_contiguous else np.empty(oshape, dt)
    acc = res if acc_dt == dt else _scratch(attrs, 2, oshape, acc_dt)
    if w.dtype != acc_dt:
        w = w.astype(acc_dt)
    psp = tuple(sp[i] + p[i] + p[i + nsp] for i in range(nsp))
    # the tile plan only bounds Cube block sizes: a depthwise conv gives the same numbers tap by tap
    if cg == 1 and mg == 1 and g > 1:
        _depthwise(x, w, p, k, s, d, osz, acc, attrs)
    elif nsp == 2 and winograd_applies(k, s, d, g, c, m, osz):
        winograd_conv3x3(x, _winograd_u(attrs, w, acc_dt), p, acc,
                         lambda key, shape, dt: _scratch(attrs, key, shape, dt), b)
        b = None  # added by the output transform
    else:
        kk = math.prod(k)
        wm = w.reshape(g, mg, cg * kk)
        a4 = acc.reshape(n, g, mg, length)
        pointwise = all(v == 1 for v in k) and not any(p)
        for i in range(n):
            xi = x[i]
            if pointwise:
                if any(v != 1 for v in s):
                    xi = xi[(slice(None), *(slice(None, None, st) for st in s))]
                if xi.dtype == acc_dt and xi.flags.c_contiguous:
                    cols = xi.reshape(g, cg, length)  # the input is the column matrix: no copy
                else:
                    buf = _scratch(attrs, 1, (c, *osz), acc_dt)
                    np.copyto(buf, xi, casting="unsafe")
                    cols = buf.reshape(g, cg, length)
            else:
                if any(p) or xi.dtype != acc_dt:
                    xi = _pad_into(xi, p, 1, _scratch(attrs, 0, (c, *psp), acc_dt))
                buf = _scratch(attrs, 1, (c, *k, *osz), acc_dt)
                _im2col(xi, k, s, d, osz, buf)
                cols = buf.reshape(g, cg * kk, length)
            if g == 1:
                np.matmul(wm[0], cols[0], out=a4[i, 0])
            else:
                np.matmul(wm, cols, out=a4[i])
    if b is not None:
        r3 = acc.reshape(n, m, length)
        broadcast_ufunc(np.add, r3, b.reshape(m, 1), r3, casting="unsafe")
    _activate(acc, act)
    if acc is not res:
        np.copyto(res, acc, casting="unsafe")
    return res


def _winograd_u(attrs: dict[str, Any], w: np.ndarray, dt: np.dtype) -> np.ndarray:
    """The Winograd weight transform, kept in the step's attrs while the weights
    (read-only views into the loaded file) stay the same array."""
    key = (w.__array_interface__["data"][0], w.shape, dt.str)
    hit = attrs.get("_winograd_u")
    if hit is None or hit[0] != key:
        hit = attrs["_winograd_u"] = (key, winograd_weights(w, dt))
    return hit[1]


@functools.lru_cache(maxsize=256)
def _phase_plan(psp: tuple[int, ...], k: tuple[int, ...], st: int, d: tuple[int, ...], osz: tuple[int, ...]):
    """Geometry of the phase-image depthwise product (pure, cached per conv shape)."""
    nsp = len(k)
    qsp = tuple(-(-psp[i] // st) for i in range(nsp))  # phase image dims
    qstr = [math.prod(qsp[i + 1:]) for i in range(nsp)]  # element strides
    qimg = math.prod(qsp)
    phase_of = []
    offs = []
    for tap in itertools.product(*(range(v) for v in k)):
        ph = [(tap[i] * d[i]) % st for i in range(nsp)]
        phase_of.append(sum(ph[i] * st ** (nsp - 1 - i) for i in range(nsp)))
        offs.append(sum(((tap[i] * d[i]) // st) * qstr[i] for i in range(nsp)))
    wide = osz[0] * qstr[0]
    return qsp, qimg, st ** nsp, tuple(phase_of), tuple(offs), wide, max(qimg, wide + max(offs))


def _depthwise(x: np.ndarray, w: np.ndarray, p: list[int], k, s, d, osz, res: np.ndarray,
               attrs: dict[str, Any]) -> None:
    """out[n, c] = sum over taps of w[c, tap] * x[n, c, o*s + tap*d] (group = channels)."""
    n, c = x.shape[:2]
    nsp = len(k)
    dt = res.dtype
    wf = w.reshape(c, -1)
    taps = list(itertools.product(*(range(v) for v in k)))
    psp = tuple(x.shape[2 + i] + p[i] + p[i + nsp] for i in range(nsp))
    if len(set(s)) != 1:
        # mixed strides: one pass per tap over strided views of the padded input
        xp = x if not any(p) and x.dtype == dt else _pad_into(x, p, 2, _scratch(attrs, 0, (n, c, *psp), dt))
        tmp = _scratch(attrs, 4, res.shape, dt)
        for t, tap in enumerate(taps):
            sl = (slice(None), slice(None),
                  *(slice(tap[i] * d[i], tap[i] * d[i] + (osz[i] - 1) * s[i] + 1, s[i]) for i in range(nsp)))
            wt = wf[:, t].reshape((c,) + (1,) * nsp)
            if t == 0:
                np.multiply(xp[sl], wt, out=res)
            else:
                np.multiply(xp[sl], wt, out=tmp)
                res += tmp
        return
    # Equal strides s: the padded image is split into s**nsp phase images (every s-th
    # element from each phase offset); output o, tap t reads phase (t*d) % s at o + (t*d) // s,
    # a stride-1 access.  Each phase image is flattened into a row; the taps of position j of
    # the "wide" output (output rows laid out with the phase row length) sit at
    # row[off(tap) + j], so a tap's column row is ONE contiguous slice, and the taps are summed
    # by a batched [1, K] x [K, wide] product per channel.  The wide columns past the real
    # output width are computed and dropped (they read only zeros or the image).
    st = s[0]
    qsp, qimg, nph, phase_of, offs, wide, row = _phase_plan(psp, tuple(k), st, tuple(d), tuple(osz))
    buf = _scratch(attrs, 0, (nph, c, row), dt)
    cols = _scratch(attrs, 1, (c, len(taps), wide), dt)
    acc = _scratch(attrs, 4, (c, 1, wide), dt)
    buf[:, :, qimg:] = 0  # read only by dropped wide columns; zero keeps them finite
    xp = _scratch(attrs, 6, (c, *psp), dt) if st > 1 else None
    wk = wf[:, None, :]
    for i in range(n):
        if st == 1:
            _pad_into(x[i], p, 1, buf[0, :, :qimg].reshape(c, *psp))
        else:
            _pad_into(x[i], p, 1, xp)
            for phi, ph in enumerate(itertools.product(range(st), repeat=nsp)):
                src = xp[(slice(None), *(slice(ph[j], None, st) for j in range(nsp)))]
                dst = buf[phi, :, :qimg].reshape(c, *qsp)
                dst[(slice(None), *(slice(0, v) for v in src.shape[1:]))] = src
                for j in range(nsp):  # the ragged edge of a shorter phase
                    if src.shape[1 + j] < qsp[j]:
                        dst[(slice(None), *(slice(None),) * j, slice(src.shape[1 + j], None))] = 0
        for t, off in enumerate(offs):
            cols[:, t] = buf[phase_of[t], :, off: off + wide]
        np.matmul(wk, cols, out=acc)
        res[i] = acc.reshape(c, osz[0], *qsp[1:])[(Ellipsis, *(slice(0, osz[j]) for j in range(1, nsp)))]


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
    kk = math.prod(k)
    length = math.prod(sp)
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
