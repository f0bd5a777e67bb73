"""Data movement and shape ops: views where numpy gives one (Reshape, Flatten,
Squeeze, Unsqueeze, Identity), otherwise one copy into the arena view.

A view kernel returns ``x.reshape(...)``; when the memory plan aliased the
result with the operand (trait view), that array *is* the arena slot and the
runtime skips the copy.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from runtime.kernels import kernel, planner, slot

__all__: list[str] = []


def _ints(a: Any) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _axes(inputs: list[Any], attrs: dict[str, Any], i: int) -> list[int] | None:
    if attrs.get("axes") is not None:
        return list(attrs["axes"])
    if len(inputs) > i and inputs[i] is not None:
        return _ints(inputs[i])
    return None


@kernel("Reshape", view=True)
def _reshape(inputs, attrs, out):
    x = inputs[0]
    shape = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else list(attrs["shape"])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


@kernel("Flatten", view=True)
def _flatten(inputs, attrs, out):
    x = inputs[0]
    a = int(attrs.get("axis", 1))
    a = a + x.ndim if a < 0 else a
    lead = int(np.prod(x.shape[:a], dtype=np.int64))
    return [x.reshape(lead, -1) if x.size else x.reshape(lead, int(np.prod(x.shape[a:], dtype=np.int64)))]


@kernel("Squeeze", view=True)
def _squeeze(inputs, attrs, out):
    x = inputs[0]
    axes = _axes(inputs, attrs, 1)
    if not axes:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(a % x.ndim for a in axes))]


@kernel("Unsqueeze", view=True)
def _unsqueeze(inputs, attrs, out):
    x = inputs[0]
    axes = _axes(inputs, attrs, 1) or []
    r = x.ndim + len(axes)
    shape = list(x.shape)
    for a in sorted(a % r for a in axes):
        shape.insert(a, 1)
    return [x.reshape(shape)]


@kernel("Transpose")
def _transpose(inputs, attrs, out):
    x = inputs[0]
    perm = attrs.get("perm") or list(range(x.ndim))[::-1]
    return [np.transpose(x, perm)]


@planner("Transpose")
def _plan_transpose(inputs, attrs, out):
    x, o = inputs[0], out[0]
    if not isinstance(x, np.ndarray) or o.dtype != x.dtype:
        return None
    t = np.transpose(x, attrs.get("perm") or list(range(x.ndim))[::-1])  # a view of x: reads its bytes per call
    if t.shape != o.shape or np.may_share_memory(t, o):
        return None
    return partial(np.copyto, o, t)


def _concat_parts(xs: list[np.ndarray], axis: int, o: np.ndarray):
    """(operand, its slice of `o`, whether it is already there) per operand."""
    pos = 0
    for v in xs:
        dst = o[(slice(None),) * axis + (slice(pos, pos + v.shape[axis]),)]
        pos += v.shape[axis]
        there = v.size == 0 or (v.ctypes.data == dst.ctypes.data and v.dtype == dst.dtype and v.shape == dst.shape
                                and v.flags.c_contiguous and dst.flags.c_contiguous)
        yield v, dst, there


def concat_in_place(inputs: list[Any], attrs: dict[str, Any], o: np.ndarray | None) -> bool:
    """Whether every operand already sits in its slice of `o` (assign-buffers
    placed them there), so the Concat has nothing to copy."""
    xs = [v for v in inputs if v is not None]
    if o is None or not xs or any(not isinstance(v, np.ndarray) for v in xs):
        return False
    axis = int(attrs["axis"]) % xs[0].ndim
    if sum(v.shape[axis] for v in xs) != o.shape[axis]:
        return False
    return all(there for _, _, there in _concat_parts(xs, axis, o))


@kernel("Concat")
def _concat(inputs, attrs, out):
    xs = [v for v in inputs if v is not None]
    axis = int(attrs["axis"]) % xs[0].ndim
    o = slot(out, 0)
    total = sum(v.shape[axis] for v in xs)
    shape = xs[0].shape[:axis] + (total,) + xs[0].shape[axis + 1:]
    if o is None or o.shape != shape or o.dtype != np.result_type(*xs):
        return [np.concatenate(xs, axis=axis)]
    # assign-buffers may have placed operands in their slices of the result
    # already (produced in place): copy only the others
    for v, dst, there in _concat_parts(xs, axis, o):
        if not there:
            np.copyto(dst, v, casting="unsafe")
    return [o]


@planner("Concat")
def _plan_concat(inputs, attrs, out):
    """The operands not already in their slices, copied there (`_concat_parts`)."""
    xs = [v for v in inputs if v is not None]
    o = out[0]
    if not xs or not all(isinstance(v, np.ndarray) and v.dtype == o.dtype for v in xs):
        return None
    axis = int(attrs["axis"]) % xs[0].ndim
    if o.shape != xs[0].shape[:axis] + (sum(v.shape[axis] for v in xs),) + xs[0].shape[axis + 1:]:
        return None
    copies = [(dst, v) for v, dst, there in _concat_parts(xs, axis, o) if not there]
    if any(np.may_share_memory(v, o) for _, v in copies):
        return None

    def run() -> None:
        for dst, v in copies:
            np.copyto(dst, v)
    return run


@kernel("Split")
def _split(inputs, attrs, out):
    x = inputs[0]
    axis = int(attrs.get("axis", 0)) % x.ndim
    sizes = attrs.get("split")
    if sizes is None and len(inputs) > 1 and inputs[1] is not None:
        sizes = _ints(inputs[1])
    if not sizes:
        n = int(attrs.get("num_outputs") or attrs.get("_n_outputs") or len(out or []) or 1)
        d = x.shape[axis]
        chunk = -(-d // n)
        sizes = [chunk] * (n - 1) + [d - chunk * (n - 1)]
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(x, bounds, axis=axis))


@planner("Split")
def _plan_split(inputs, attrs, out):
    """Each part copied into its view; the parts' sizes are the views' (the program's
    shapes), never read from a split operand."""
    x = inputs[0]
    axis = int(attrs.get("axis", 0)) % x.ndim
    copies, pos = [], 0
    for o in out:
        n = o.shape[axis]
        part = x[(slice(None),) * axis + (slice(pos, pos + n),)]
        if o.dtype != x.dtype or part.shape != o.shape or np.may_share_memory(x, o):
            return None
        copies.append((o, part))
        pos += n
    if pos != x.shape[axis]:
        return None

    def run() -> None:
        for o, part in copies:
            np.copyto(o, part)
    return run


@kernel("Slice")
def _slice(inputs, attrs, out):
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        # Python slices clamp exactly as ONNX specifies (including negative steps)
        idx[a % x.ndim] = slice(s, e, st)
    return [x[tuple(idx)]]


@kernel("Gather")
def _gather(inputs, attrs, out):
    x, idx = inputs
    axis = int(attrs.get("axis", 0)) % x.ndim
    o = slot(out, 0)
    if o is not None and o.dtype == x.dtype and o.shape == x.shape[:axis] + idx.shape + x.shape[axis + 1:]:
        return [np.take(x, idx.astype(np.int64, copy=False), axis=axis, out=o)]
    return [np.take(x, idx.astype(np.int64, copy=False), axis=axis)]


@planner("Gather")
def _plan_gather(inputs, attrs, out):
    """``np.take(x, idx, axis, out=o)``: the indices are read (and range-checked) per call."""
    x, idx = inputs
    o = out[0]
    if not (isinstance(x, np.ndarray) and isinstance(idx, np.ndarray)) or idx.dtype != np.int64 or x.ndim == 0:
        return None
    axis = int(attrs.get("axis", 0)) % x.ndim
    if o.dtype != x.dtype or o.shape != x.shape[:axis] + idx.shape + x.shape[axis + 1:] or np.may_share_memory(x, o):
        return None
    return partial(np.take, x, idx, axis=axis, out=o)


@kernel("GatherElements")
def _gather_elements(inputs, attrs, out):
    x, idx = inputs
    axis = int(attrs.get("axis", 0)) % x.ndim
    idx = idx.astype(np.int64, copy=False)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return [np.take_along_axis(x, idx, axis=axis)]


@kernel("Shape")
def _shape(inputs, attrs, out):
    x = inputs[0]
    start = attrs.get("start", 0) or 0
    end = attrs.get("end")
    return [np.array(x.shape[slice(start, end)], dtype=np.int64)]


@kernel("Size")
def _size(inputs, attrs, out):
    return [np.array(inputs[0].size, dtype=np.int64)]


@kernel("Expand")
def _expand(inputs, attrs, out):
    x = inputs[0]
    shape = np.broadcast_shapes(x.shape, tuple(_ints(inputs[1])))
    return [np.broadcast_to(x, shape)]


@kernel("Tile")
def _tile(inputs, attrs, out):
    return [np.tile(inputs[0], _ints(inputs[1]))]


@kernel("Pad", accepts=lambda attrs, dt: (attrs.get("mode") or "constant") in ("constant", "reflect", "edge", "wrap"))
def _pad(inputs, attrs, out):
    x = inputs[0]
    pads = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else list(attrs.get("pads") or [])
    value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("value", 0)
    value = np.asarray(value if value is not None else 0).reshape(-1)
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(x.ndim))
    n = len(axes)
    width = [(0, 0)] * x.ndim
    for j, a in enumerate(axes):
        width[a % x.ndim] = (pads[j], pads[j + n])
    mode = attrs.get("mode") or "constant"
    mode = mode.decode() if isinstance(mode, bytes) else mode
    # negative pads crop
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(width))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in width]
    if mode == "constant":
        return [np.pad(x, width, mode="constant", constant_values=value[0] if value.size else 0)]
    return [np.pad(x, width, mode=mode)]


@kernel("ConstantOfShape")
def _constant_of_shape(inputs, attrs, out):
    v = attrs.get("value")
    v = np.zeros(1, np.float32) if v is None else np.asarray(v)
    return [np.full(_ints(inputs[0]), v.reshape(-1)[0], dtype=v.dtype)]


@kernel("Range")
def _range(inputs, attrs, out):
    start, limit, delta = (np.asarray(v).reshape(()) for v in inputs)
    n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    return [(start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype)]


@planner("Range")
def _plan_range(inputs, attrs, out):
    """An integer Range into its view: the bounds are read per call; a length the
    view does not have is an error (the program's shape says otherwise)."""
    start, limit, delta = inputs
    o = out[0]
    if o.ndim != 1 or o.dtype.kind not in "iu" or any(np.asarray(v).dtype != o.dtype for v in inputs):
        return None
    idx = np.arange(o.shape[0], dtype=o.dtype)

    def run() -> None:
        a, b, d = int(start.reshape(-1)[0]), int(limit.reshape(-1)[0]), int(delta.reshape(-1)[0])
        if d == 0 or max(-(-(b - a) // d), 0) != o.shape[0]:
            raise ValueError(f"Range({a}, {b}, {d}) does not have the {o.shape[0]} elements planned")
        np.multiply(idx, d, out=o)
        np.add(o, a, out=o)
    return run
