"""The kernel registry: kernel name (= op kind) -> implementation.

A kernel is ``fn(inputs, attrs, out) -> list[np.ndarray]``:

- ``inputs``: one array per operand, ``None`` for an absent optional operand;
  weights are read-only views into the loaded file — never write to inputs.
- ``attrs``: the op's attributes (ONNX names, defaults filled in; array
  attributes as arrays; ``_opset`` holds the step's ONNX opset when known).
- ``out``: one entry per result: the result's arena view, or ``None`` when the
  value has no arena slot (dynamic shape); ``out`` itself may be ``None`` when a
  kernel is called outside a session.  A kernel may write into a view and return
  it (no copy), or return fresh arrays (the runtime copies them into the arena).
  A view may alias an operand (in-place elementwise ops): read every operand
  before the last write into it.

    @kernel("Relu")
    def relu(inputs, attrs, out):
        return [np.maximum(inputs[0], 0, out=slot(out, 0))]

``accepts(attrs, in_dtypes) -> bool`` lets a native kernel decline a case it
does not cover (e.g. Cast to a string); declined and unregistered kernels run
on the AICPU fallback (`runtime.kernels.aicpu`, built on ``onnx.reference``).

A kernel may also have a *planner* (`planner`): ``plan(inputs, attrs, out) ->
thunk | None`` looks at the operands once and returns a no-argument callable that
computes the step into its views (the numpy call with every argument bound), or
None when the case is not one it plans.  The Session plans a step whose operands
and results are arena views or constants, runs the thunk on every later run and
plans again when a view changes (a new symbol binding): a decode step's MatMul is
then one ``np.matmul(x, w, out=o)``, its checks paid once.  A thunk may read the
operands' *contents* (they change per run) but must not have decided anything
from them: only shapes, dtypes, attributes and constant operands.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["KernelEntry", "KernelFn", "PlanFn", "broadcast_ufunc", "kernel", "load_families", "lookup_kernel",
           "planner", "registered_kernels", "slot"]

KernelFn = Callable[[list[Any], dict[str, Any], Any], Sequence[np.ndarray]]
AcceptsFn = Callable[[dict[str, Any], list[Any]], bool]
PlanFn = Callable[[list[Any], dict[str, Any], list[Any]], Callable[[], Any] | None]


@dataclass(frozen=True)
class KernelEntry:
    name: str
    fn: KernelFn
    accepts: AcceptsFn | None = None
    scratch: bool = False  # takes the session's work buffers as ``attrs["_scratch"]``
    view: bool = False  # its result is operand 0's bytes reinterpreted (C order): nothing to do in place
    plan: PlanFn | None = None  # see the module docstring


_KERNELS: dict[str, KernelEntry] = {}
_FAMILIES = ("matmul", "conv", "activations", "elementwise", "reduce", "movement", "quant", "random", "shape", "kv",
             "attention", "llm", "nbits", "resize")
_loaded = False


def kernel(*names: str, accepts: AcceptsFn | None = None, scratch: bool = False,
           view: bool = False) -> Callable[[KernelFn], KernelFn]:
    """Register `fn` under each of `names`; ``scratch=True``: the Session hands it its
    reusable work buffers (``attrs["_scratch"]``, a `runtime.kernels.matmul.Scratch`);
    ``view=True``: its result is operand 0's bytes reinterpreted, so a step whose
    result the plan put at its operand's offset is dropped by the Session."""

    def deco(fn: KernelFn) -> KernelFn:
        for n in names:
            if n in _KERNELS:
                raise ValueError(f"kernel {n!r} registered twice")
            _KERNELS[n] = KernelEntry(n, fn, accepts, scratch, view)
        return fn

    return deco


def planner(*names: str) -> Callable[[PlanFn], PlanFn]:
    """Register `fn` as the planner of the (already registered) kernels `names`."""

    def deco(fn: PlanFn) -> PlanFn:
        for n in names:
            _KERNELS[n] = replace(_KERNELS[n], plan=fn)
        return fn

    return deco


def slot(out: Sequence[np.ndarray | None] | None, i: int) -> np.ndarray | None:
    """The arena view for result `i`, or None (then numpy allocates)."""
    if out is None or i >= len(out):
        return None
    return out[i]


def _inner_run(shape: tuple[int, ...], *operands: tuple[int, ...]) -> int:
    """Elements in the innermost run numpy's iterator sees for a broadcast of
    `operands` to `shape`: the trailing dims over which every operand is either
    full or broadcast throughout (so it can coalesce them)."""
    run, pattern = 1, None
    for k in range(1, len(shape) + 1):
        d = shape[-k]
        if d == 1:
            continue
        p = tuple(len(s) >= k and s[-k] == d for s in operands)
        if pattern is None:
            pattern = p
        elif p != pattern:
            break
        run *= d
    return run


def broadcast_ufunc(fn: Any, a: np.ndarray, b: Any, out: np.ndarray | None, **kw: Any) -> np.ndarray:
    """``fn(a, b, out=out, **kw)`` for a broadcasting binary ufunc, e.g. a per-channel
    bias over NCHW.

    numpy 2.4 buffers (copies) runs shorter than half its buffer size (8192
    elements) to grow the inner loop, and with a broadcast operand that made a
    per-channel add over 56x56 maps 2.5-3x slower than over longer runs
    (0.13 ns/element against 0.045).  When the inner run is 512..4095 elements
    and the op is big enough to pay for it, the buffer shrinks for the call so
    that runs are iterated in place.
    """
    if out is not None and out.size >= 65536 and isinstance(b, np.ndarray) and a.shape != b.shape:
        run = _inner_run(out.shape, a.shape, b.shape)
        if 512 <= run < 4096:
            old = np.setbufsize(1 << (2 * run).bit_length() - 1)  # largest power of two <= 2 * run
            try:
                return fn(a, b, out=out, **kw)
            finally:
                np.setbufsize(old)
    return fn(a, b, out=out, **kw)


def load_families() -> None:
    """Import every kernel family module (each registers its kernels on import)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for fam in _FAMILIES:
        importlib.import_module(f"runtime.kernels.{fam}")


def lookup_kernel(name: str) -> KernelEntry | None:
    load_families()
    return _KERNELS.get(name)


def registered_kernels() -> dict[str, KernelEntry]:
    load_families()
    return dict(_KERNELS)
