"""``kv.append``: Concat(past, new) along `axis`, into the KV cache buffer.

The Session binds the step's output to a view ``cache[:, :, :past + new, :]`` of
a buffer sized at the bounds that lives across runs.  When ``past`` is already
that buffer's prefix (same address and strides: the previous run's ``present``
fed back), only the new positions are written — no copy proportional to the
cache; otherwise ``past`` is copied in first.  Without a buffer (unbounded
dims) it is a plain concatenation.

A compressed cache (``dtype = "f16" | "i8"``, `ir.ops.kv`) stores what it is given:
float16, or int8 with one scale per row of the last axis (`quantize_rows`).  Its
float present cannot be a view of the stored bytes, so the caller that carries
the cache from run to run (the generator) feeds as ``past`` the Session's
*held past* (`Session.held_past`): a read-only placeholder on the Session's small
``attrs["_held"]`` buffer (no memory of its own) that means "what the cache holds";
the kernel then writes only the new positions.  Any other past is quantized in.
In a session the step lists only the stored results (codegen); the present is
computed from them when the caller reads it (`read_cache`).
"""

from __future__ import annotations

import numpy as np

from runtime.kernels import kernel

__all__ = ["dequantize_rows", "quantize_rows", "read_cache"]


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _is_prefix_of(past: np.ndarray, out: np.ndarray) -> bool:
    return past.size == 0 or (_addr(past) == _addr(out) and past.strides == out.strides)


_HEADS: dict[int, tuple[slice, ...]] = {}


def _head(axis: int) -> tuple[slice, ...]:
    head = _HEADS.get(axis)
    if head is None:
        head = _HEADS[axis] = (slice(None),) * axis
    return head


@kernel("kv.append")
def _kv_append(inputs, attrs, out):
    past, new = inputs
    axis = attrs["axis"]
    if axis < 0:
        axis += past.ndim
    if attrs.get("dtype"):
        return _append_stored(past, new, axis, attrs, out)
    o = out[0] if out else None
    n_past = past.shape[axis]
    if o is None or o.shape != past.shape[:axis] + (n_past + new.shape[axis],) + past.shape[axis + 1:]:
        return [np.concatenate([past, new], axis=axis)]
    head = _head(axis)
    if n_past and not _is_prefix_of(past, o):
        o[head + (slice(0, n_past),)] = past
    o[head + (slice(n_past, None),)] = new
    return [o]


# -- compressed caches -------------------------------------------------------------------

def quantize_rows(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> None:
    """Symmetric int8 per row of the last axis, into `q` (int8, x's shape) and `scale`
    (x's shape without the last axis): ``scale = amax(|row|) / 127`` rounded to
    `scale`'s dtype, ``q = round(x / scale)`` from that stored scale, so that
    ``|x - q * scale| <= scale / 2``; an all-zero row has scale 0 and q 0."""
    x64 = x.astype(np.float64)  # the new positions only: a few rows per decode step
    np.copyto(scale, np.abs(x64).max(axis=-1, initial=0.0) / 127.0, casting="unsafe")
    s = scale.astype(np.float64)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.rint(np.divide(x64, s, out=np.zeros_like(x64), where=s > 0))
    np.copyto(q, np.clip(r, -127, 127), casting="unsafe")


def dequantize_rows(q: np.ndarray, scale: np.ndarray, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``q * scale`` per row of the last axis, in `dtype` (f32 arithmetic)."""
    r = np.multiply(q, scale[..., None], dtype=np.float32)
    if out is None:
        return r if r.dtype == dtype else r.astype(dtype)
    np.copyto(out, r, casting="unsafe")
    return out


def read_cache(cache: np.ndarray, scale: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """A compressed cache read back as a fresh array of `dtype` (the present a caller reads)."""
    if scale is None:
        return cache.astype(dtype)
    return dequantize_rows(cache, scale, dtype)


def _store(x: np.ndarray, views: list[np.ndarray], at: tuple) -> None:
    """Write `x` at `at` of the stored cache `views` ([cache] or [cache, scales])."""
    if len(views) == 1:
        np.copyto(views[0][at], x, casting="unsafe")
    else:
        quantize_rows(x, views[0][at], views[1][at])


def _held(past: np.ndarray, attrs: dict) -> bool:
    """`past` is the Session's held past ("what the cache holds"), not values to copy in."""
    held = attrs.get("_held")
    if held is None or past.size == 0:
        return False
    p, h = _addr(past), _addr(held)
    if not h <= p < h + held.nbytes:
        return False
    if p != h:
        raise ValueError("kv.append: a slice of a held past was fed; drop its oldest positions with "
                         "Session.held_past(name, drop=n) instead")
    return True


def _append_stored(past: np.ndarray, new: np.ndarray, axis: int, attrs: dict, out) -> list[np.ndarray]:
    """kv.append with ``dtype``: results [present, cache(, scales)]; in a session (the
    step lists only the stored results) just the stored ones, written in place."""
    i8 = attrs["dtype"] == "i8"
    n_stored = 2 if i8 else 1
    n_out = int(attrs.get("_n_outputs", n_stored + 1))
    n_past = past.shape[axis]
    shape = past.shape[:axis] + (n_past + new.shape[axis],) + past.shape[axis + 1:]
    views = [out[i] if out is not None and i < len(out) else None for i in range(n_out - n_stored, n_out)]
    if views[0] is None or views[0].shape != shape:
        views = [np.empty(shape, np.int8 if i8 else np.float16)] + ([np.empty(shape[:-1], np.float32)] if i8 else [])
    head = _head(axis)
    if n_past and not _held(past, attrs):
        _store(past, views, head + (slice(0, n_past),))
    _store(new, views, head + (slice(n_past, None),))
    if n_out == n_stored:
        return views
    return [read_cache(views[0], views[1] if i8 else None, past.dtype), *views]
