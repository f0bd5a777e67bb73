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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ir.symbolic import Expr, parse_dim, symbols
from runtime.errors import InputError, RuntimeFailure

__all__ = ["DimBinder", "DynamicViews", "bind_dims"]


def _plain_symbol(d: Any) -> str | None:
    e = parse_dim(d) if isinstance(d, str) else None
    if e is None or len(e.terms) != 1:
        return None
    (m, c), = e.terms.items()
    return m[0] if c == 1 and len(m) == 1 else None


def _solve_linear(e: Expr | None, n: int, env: dict[str, int]) -> bool:
    """Bind the one unbound symbol of `e` when it appears alone with coefficient ±1."""
    if e is None:
        return False
    free = [m for m in e.terms if any(s not in env for s in m)]
    if len(free) != 1 or len(free[0]) != 1 or abs(e.terms[free[0]]) != 1:
        return False
    rest = sum(c * math.prod(env[s] for s in m) for m, c in e.terms.items() if m != free[0])
    env[free[0][0]] = (n - rest) * e.terms[free[0]]
    return True


class DimBinder:
    """`bind_dims` with the inputs' shapes parsed once: a run only reads the feeds'
    sizes (a decode step binds its symbols in a few microseconds)."""

    def __init__(self, specs: Sequence[tuple[str, Sequence[Any]]], ranges: Mapping[str, tuple[int, int]],
                 gears: Mapping[str, Any] | None = None) -> None:
        # (input, axis, symbol) for dims that are one symbol; (input name, dim, input, axis, polynomial) else
        self._plain: list[tuple[int, int, str]] = []
        self._exprs: list[tuple[str, str, int, int, Expr | None]] = []
        self._names = [name for name, _ in specs]
        for k, (name, shape) in enumerate(specs):
            for axis, d in enumerate(shape):
                if isinstance(d, int):
                    continue
                sym = _plain_symbol(d)
                if sym is None:
                    self._exprs.append((name, d, k, axis, parse_dim(d)))
                else:
                    self._plain.append((k, axis, sym))
        self._ranges = dict(ranges)
        self._gears = gears

    def bind(self, arrays: Sequence[np.ndarray]) -> dict[str, int]:
        env: dict[str, int] = {}
        for k, axis, sym in self._plain:
            n = arrays[k].shape[axis]
            if env.setdefault(sym, n) != n:
                raise InputError(f"input {self._names[k]!r}: dim {sym} is {n} here but {env[sym]} in another input")
        if self._exprs:
            self._solve(arrays, env)
        if self._gears:
            _check_gear(self._gears, env)
        ranges = self._ranges
        for sym, v in env.items():
            lo, hi = ranges.get(sym, (0, None))
            if v < lo or (hi is not None and v > hi):
                raise InputError(f"dim {sym} = {v} is outside the range the model was compiled for "
                                 f"({lo}~{hi}); recompile with a wider --dim_range")
        return env

    def _solve(self, arrays: Sequence[np.ndarray], env: dict[str, int]) -> None:
        """Bind what the non-plain dims determine, then check every one of them."""
        exprs = [(name, d, e, arrays[k].shape[axis]) for name, d, k, axis, e in self._exprs]
        pending = list(exprs)
        while pending:
            solved = [x for x in pending if _solve_linear(x[2], x[3], env)]
            if not solved:
                break
            pending = [x for x in pending if x not in solved]
        for name, d, e, n in exprs:
            if e is None or any(s not in env for m in e.terms for s in m):
                continue
            if e.value(env) != n:
                raise InputError(f"input {name!r}: dim {d!r} should be {e.value(env)} with "
                                 f"{', '.join(f'{k}={v}' for k, v in sorted(env.items()))}, received {n}")


def _check_gear(gears: Mapping[str, Any], env: Mapping[str, int]) -> None:
    key = [env.get(d) for d in gears["dims"]]
    if key not in gears["values"]:
        listed = "; ".join(", ".join(f"{d}={v}" for d, v in zip(gears["dims"], g)) for g in gears["values"])
        got = ", ".join(f"{d}={v}" for d, v in zip(gears["dims"], key))
        raise InputError(f"the inputs' shapes give {got}, which is not one of the compiled gears: {listed}")


def bind_dims(specs: Sequence[tuple[str, Sequence[Any]]], arrays: Sequence[np.ndarray],
              ranges: Mapping[str, tuple[int, int]], gears: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Each symbol's value from the inputs' shapes; `InputError` when the shapes
    disagree with each other, fall outside the compiled ranges, or match none of
    the compiled gears (``{"dims": [...], "values": [[...], ...]}``)."""
    return DimBinder(specs, ranges, gears).bind(arrays)


class _Poly(int):
    """A dim of a planned shape that is the group's polynomial number `self`."""


class DynamicViews:
    """The activations whose shape has symbols: their planned slots and their
    current views.  A new binding re-views only the activations whose symbols
    changed: a decode step (only the past length grows) re-views the few tensors
    that depend on it, and allocates nothing for the rest."""

    def __init__(self, acts: Sequence[Mapping[str, Any]], arena: np.ndarray, dtype_of,
                 kv_buffers: Mapping[int, np.ndarray] | None = None, *, scale: int = 1,
                 held: frozenset[int] = frozenset()) -> None:
        """`scale`, `held`: emulated f16 (`runtime.f16.F16Layout`): offsets and sizes are
        `scale` times the plan's and the `held` activations are float32 views."""
        self.arena = arena
        self._base = arena.__array_interface__["data"][0]
        # per set of symbols, the activations whose shape holds them: (act, offset, capacity, dtype, shape)
        self._groups: dict[tuple[str, ...], list[tuple[int, int, int, Any, list]]] = {}
        self._kv = dict(kv_buffers or {})
        self._kv_ptr = {i: b.__array_interface__["data"][0] for i, b in self._kv.items()}
        polys: dict[tuple[str, ...], dict[str, int]] = {}  # per group, its distinct dim polynomials
        exprs: dict[tuple[str, ...], list[Expr | None]] = {}
        for i, a in enumerate(acts):
            shape = list(a["shape"])
            if all(isinstance(d, int) for d in shape) or (a["offset"] < 0 and i not in self._kv):
                continue
            syms = tuple(sorted({s for d in shape if isinstance(d, str) for s in symbols(d)}))
            seen, known = polys.setdefault(syms, {}), exprs.setdefault(syms, [])
            dims: list[Any] = []
            for d in shape:
                if isinstance(d, int):
                    dims.append(d)
                    continue
                if d not in seen:
                    seen[d] = len(known)
                    known.append(parse_dim(d))  # None: no value (an error per run)
                dims.append(_Poly(seen[d]))
            dt = np.dtype(np.float32) if i in held else dtype_of(a["dtype"])
            self._groups.setdefault(syms, []).append((i, scale * a["offset"], scale * a["nbytes"], dt, dims))
        self._exprs = exprs
        self._keys: dict[tuple[str, ...], tuple] = {}

    @property
    def indices(self) -> set[int]:
        return {s[0] for slots in self._groups.values() for s in slots}

    def __bool__(self) -> bool:
        return bool(self._groups)

    def changed(self, env: Mapping[str, int]) -> list[tuple[int, np.ndarray, int]]:
        """(activation, view, address of its first byte) for each activation whose
        shape differs from the last binding's."""
        out = []
        for syms, slots in self._groups.items():
            key = tuple([env.get(s, -1) for s in syms])
            if self._keys.get(syms) == key:
                continue
            self._keys[syms] = key
            try:  # each distinct polynomial once
                vals = [e.value(env) for e in self._exprs[syms]]  # type: ignore[union-attr]
            except (AttributeError, KeyError):
                raise RuntimeFailure(f"a shape over {', '.join(syms)} has a symbol no input binds") from None
            if vals and min(vals) < 0:
                raise RuntimeFailure(f"a shape over {', '.join(syms)} has a negative dim {min(vals)} with "
                                     + ", ".join(f"{k}={v}" for k, v in sorted(env.items())))
            kv, arena, base = self._kv, self.arena, self._base
            for i, off, cap, dt, shape in slots:
                dims = [d if type(d) is int else vals[d] for d in shape]
                buf = kv.get(i)
                if buf is not None:  # a KV cache: the prefix of its buffer (strided), in place across runs
                    out.append((i, self._prefix(i, buf, dims), self._kv_ptr[i]))
                    continue
                if math.prod(dims) * dt.itemsize > cap:
                    raise RuntimeFailure(f"activation {i}: shape {dims} does not fit its slot of "
                                         f"{cap} bytes planned at the bound")
                # one header onto the arena, no copy
                out.append((i, np.ndarray(dims, dt, buffer=arena, offset=off), base + off))
        return out

    @staticmethod
    def _prefix(i: int, buf: np.ndarray, dims: list[int]) -> np.ndarray:
        if any(n > c for n, c in zip(dims, buf.shape)):
            raise RuntimeFailure(f"KV cache {i}: shape {dims} exceeds its buffer {list(buf.shape)}")
        return buf[tuple(slice(0, n) for n in dims)]
