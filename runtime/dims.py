"""Symbolic dims at run time: bind the symbols from the feeds' shapes, then give
every bounded activation a view of its actual shape at its planned offset.

The compiler planned each tensor with symbolic dims at the bound of its symbols
(``program["dims"]``); a run binds ``sequence_length = 7`` from ``input_ids``'s
shape and views the first bytes of that slot as ``[batch_size, 7, 64]``.
Nothing is allocated: a view is a header onto the one arena, and only the
activations whose symbols changed get a new one (a decode step, where only the
past grows, re-views the few tensors that depend on it).

    bind_dims([("input_ids", ["batch_size", "sequence_length"])], [ids], {"sequence_length": (1, 64)})
      -> {"batch_size": 1, "sequence_length": 7}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ir.symbolic import parse_dim, symbols
from runtime.errors import InputError, RuntimeFailure

__all__ = ["DynamicViews", "bind_dims"]


def _plain_symbol(d: Any) -> str | None:
    e = parse_dim(d) if isinstance(d, str) else None
    if e is None or len(e.terms) != 1:
        return None
    (m, c), = e.terms.items()
    return m[0] if c == 1 and len(m) == 1 else None


def _solve_linear(d: str, n: int, env: dict[str, int]) -> bool:
    """Bind the one unbound symbol of `d` when it appears alone with coefficient ±1."""
    e = parse_dim(d)
    if e is None:
        return False
    free = [m for m in e.terms if any(s not in env for s in m)]
    if len(free) != 1 or len(free[0]) != 1 or abs(e.terms[free[0]]) != 1:
        return False
    rest = sum(c * int(np.prod([env[s] for s in m])) for m, c in e.terms.items() if m != free[0])
    env[free[0][0]] = (n - rest) * e.terms[free[0]]
    return True


def bind_dims(specs: Sequence[tuple[str, Sequence[Any]]], arrays: Sequence[np.ndarray],
              ranges: Mapping[str, tuple[int, int]], gears: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Each symbol's value from the inputs' shapes; `InputError` when the shapes
    disagree with each other, fall outside the compiled ranges, or match none of
    the compiled gears (``{"dims": [...], "values": [[...], ...]}``)."""
    env: dict[str, int] = {}
    exprs: list[tuple[str, str, int]] = []
    for (name, shape), a in zip(specs, arrays):
        for d, n in zip(shape, a.shape):
            if isinstance(d, int):
                continue
            sym = _plain_symbol(d)
            if sym is None:
                exprs.append((name, d, int(n)))
            elif env.setdefault(sym, int(n)) != int(n):
                raise InputError(f"input {name!r}: dim {sym} is {n} here but {env[sym]} in another input")
    pending = list(exprs)
    while pending:
        solved = [x for x in pending if _solve_linear(x[1], x[2], env)]
        if not solved:
            break
        pending = [x for x in pending if x not in solved]
    for name, d, n in exprs:
        e = parse_dim(d)
        if e is None or any(s not in env for m in e.terms for s in m):
            continue
        if e.value(env) != n:
            raise InputError(f"input {name!r}: dim {d!r} should be {e.value(env)} with "
                             f"{', '.join(f'{k}={v}' for k, v in sorted(env.items()))}, received {n}")
    if gears:
        key = [env.get(d) for d in gears["dims"]]
        if key not in gears["values"]:
            listed = "; ".join(", ".join(f"{d}={v}" for d, v in zip(gears["dims"], g)) for g in gears["values"])
            got = ", ".join(f"{d}={v}" for d, v in zip(gears["dims"], key))
            raise InputError(f"the inputs' shapes give {got}, which is not one of the compiled gears: {listed}")
    for sym, v in env.items():
        lo, hi = ranges.get(sym, (0, None))
        if v < lo or (hi is not None and v > hi):
            raise InputError(f"dim {sym} = {v} is outside the range the model was compiled for "
                             f"({lo}~{hi}); recompile with a wider --dim_range")
    return env


class DynamicViews:
    """The activations whose shape has symbols: their planned slots and their
    current views.  A new binding re-views only the activations whose symbols
    changed: a decode step (only the past length grows) re-views the few tensors
    that depend on it, and allocates nothing for the rest."""

    def __init__(self, acts: Sequence[Mapping[str, Any]], arena: np.ndarray, dtype_of,
                 kv_buffers: Mapping[int, np.ndarray] | None = None) -> None:
        self.arena = arena
        # per set of symbols, the activations whose shape holds them: (act, offset, capacity, dtype, shape)
        self._groups: dict[tuple[str, ...], list[tuple[int, int, int, Any, list]]] = {}
        self._kv = dict(kv_buffers or {})
        for i, a in enumerate(acts):
            shape = list(a["shape"])
            if all(isinstance(d, int) for d in shape) or (a["offset"] < 0 and i not in self._kv):
                continue
            syms = tuple(sorted({s for d in shape if isinstance(d, str) for s in symbols(d)}))
            dims = [d if isinstance(d, int) else parse_dim(d) for d in shape]  # None: no value (an error per run)
            self._groups.setdefault(syms, []).append((i, a["offset"], a["nbytes"], dtype_of(a["dtype"]), dims))
        self._keys: dict[tuple[str, ...], tuple] = {}

    @property
    def indices(self) -> set[int]:
        return {s[0] for slots in self._groups.values() for s in slots}

    def __bool__(self) -> bool:
        return bool(self._groups)

    def changed(self, env: Mapping[str, int]) -> list[tuple[int, np.ndarray]]:
        """(activation, view) for each activation whose shape differs from the last binding's."""
        out = []
        for syms, slots in self._groups.items():
            key = tuple([env.get(s, -1) for s in syms])
            if self._keys.get(syms) == key:
                continue
            self._keys[syms] = key
            for i, off, cap, dt, shape in slots:
                try:
                    dims = [d if type(d) is int else d.value(env) for d in shape]
                except (AttributeError, KeyError):
                    raise RuntimeFailure(f"activation {i}: shape {shape} has a symbol no input binds") from None
                out.append((i, self._view(i, off, cap, dt, dims)))
        return out

    def _view(self, i: int, off: int, cap: int, dt: Any, dims: list[int]) -> np.ndarray:
        buf = self._kv.get(i)
        if buf is not None:  # a KV cache: the prefix of its buffer (strided), in place across runs
            if any(n > c for n, c in zip(dims, buf.shape)):
                raise RuntimeFailure(f"KV cache {i}: shape {dims} exceeds its buffer {list(buf.shape)}")
            return buf[tuple(slice(0, n) for n in dims)]
        n = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
        if min(dims, default=0) < 0 or n > cap:
            raise RuntimeFailure(f"activation {i}: shape {dims} ({n} bytes) does not fit its slot of "
                                 f"{cap} bytes planned at the bound")
        return np.ndarray(dims, dt, buffer=self.arena, offset=off)  # one header onto the arena, no copy

