"""Symbolic dims: integer polynomials over named symbols, as ONNX models name them.

A dim is an ``int``, a canonical expression string (``"sequence_length"``,
``"past_sequence_length + sequence_length"``, ``"2*batch_size"``,
``"batch_size*sequence_length"``) or ``"?"`` (unknown).  Arithmetic on dims keeps
them canonical, so two dims that are equal as polynomials compare equal as strings:

    dim_add("past_sequence_length", "sequence_length") -> "past_sequence_length + sequence_length"
    dim_mul("batch_size", 4)                           -> "4*batch_size"
    dim_value("past_sequence_length + sequence_length", {"past_sequence_length": 8, "sequence_length": 1}) -> 9
    dim_bound("2*N - 1", {"N": (1, 8)})                -> 15

Bounds (`dim_bound`) are what the memory planner sizes a tensor for: each term at
the end of its symbols' ranges that makes it largest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

__all__ = [
    "UNKNOWN",
    "Expr",
    "dim_add",
    "dim_bound",
    "dim_div",
    "dim_floordiv",
    "dim_mul",
    "dim_neg",
    "dim_prod",
    "dim_sub",
    "dim_value",
    "parse_dim",
    "parse_ranges",
    "symbols",
]

UNKNOWN = "?"
Dim = int | str
Monomial = tuple[str, ...]  # sorted symbol names, repeated for powers; () is the constant term

_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_.]*)|(.))")


class Expr:
    """An integer polynomial: {monomial: coefficient}, no zero coefficients."""

    __slots__ = ("terms",)

    def __init__(self, terms: Mapping[Monomial, int]) -> None:
        self.terms = {m: c for m, c in terms.items() if c}

    @staticmethod
    def const(n: int) -> Expr:
        return Expr({(): n})

    @staticmethod
    def sym(name: str) -> Expr:
        return Expr({(name,): 1})

    def is_const(self) -> bool:
        return all(m == () for m in self.terms)

    def __add__(self, other: Expr) -> Expr:
        t = dict(self.terms)
        for m, c in other.terms.items():
            t[m] = t.get(m, 0) + c
        return Expr(t)

    def __neg__(self) -> Expr:
        return Expr({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Expr) -> Expr:
        return self + (-other)

    def __mul__(self, other: Expr) -> Expr:
        t: dict[Monomial, int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = tuple(sorted(m1 + m2))
                t[m] = t.get(m, 0) + c1 * c2
        return Expr(t)

    def floordiv(self, k: int) -> Expr | None:
        """Exact division by a positive int, or None when a coefficient is not a multiple."""
        if k <= 0 or any(c % k for c in self.terms.values()):
            return None
        return Expr({m: c // k for m, c in self.terms.items()})

    def value(self, env: Mapping[str, int]) -> int:
        total = 0
        for m, c in self.terms.items():
            p = c
            for s in m:
                p *= env[s]
            total += p
        return total

    def bound(self, ranges: Mapping[str, tuple[int, int]]) -> int:
        """An upper bound over the symbols' ranges (each term at its largest)."""
        total = 0
        for m, c in self.terms.items():
            lo = hi = c
            for s in m:
                a, b = ranges[s]
                cands = (lo * a, lo * b, hi * a, hi * b)
                lo, hi = min(cands), max(cands)
            total += hi
        return total

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts: list[str] = []
        for m in sorted(self.terms, key=lambda m: (m == (), m)):
            c = self.terms[m]
            body = "*".join(m)
            mag = abs(c)
            term = str(mag) if not body else (body if mag == 1 else f"{mag}*{body}")
            parts.append(("- " if c < 0 else "+ ") + term)
        s = " ".join(parts)
        return s[2:] if s.startswith("+ ") else "-" + s[2:]


def _parse(text: str) -> Expr | None:
    toks = [(n, s, o) for n, s, o in _TOKEN.findall(text) if n or s or o.strip()]
    pos = 0

    def peek() -> tuple[str, str, str] | None:
        return toks[pos] if pos < len(toks) else None

    def atom() -> Expr | None:
        nonlocal pos
        t = peek()
        if t is None:
            return None
        pos += 1
        n, s, o = t
        if n:
            return Expr.const(int(n))
        if s:
            return Expr.sym(s)
        if o == "(":
            e = expr()
            if e is None or peek() is None or peek()[2] != ")":
                return None
            pos += 1
            return e
        if o == "-":
            a = atom()
            return None if a is None else -a
        return None

    def term() -> Expr | None:
        nonlocal pos
        e = atom()
        while e is not None and peek() is not None and peek()[2] == "*":
            pos += 1
            r = atom()
            e = None if r is None else e * r
        return e

    def expr() -> Expr | None:
        nonlocal pos
        e = term()
        while e is not None and peek() is not None and peek()[2] in "+-":
            op = peek()[2]
            pos += 1
            r = term()
            e = None if r is None else (e + r if op == "+" else e - r)
        return e

    e = expr()
    return e if pos == len(toks) else None


@lru_cache(maxsize=4096)
def parse_dim(d: Dim) -> Expr | None:
    """The polynomial a dim stands for; None for "?" and text that is not an expression."""
    if isinstance(d, int):
        return Expr.const(d)
    if d == UNKNOWN or not d.strip():
        return None
    return _parse(d)


def _dim(e: Expr | None) -> Dim:
    if e is None:
        return UNKNOWN
    if e.is_const():
        return e.terms.get((), 0)
    return str(e)


def _binary(a: Dim, b: Dim, op) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return op(a, b)
    ea, eb = parse_dim(a), parse_dim(b)
    return UNKNOWN if ea is None or eb is None else _dim(op(ea, eb))


def dim_add(a: Dim, b: Dim) -> Dim:
    return _binary(a, b, lambda x, y: x + y)


def dim_sub(a: Dim, b: Dim) -> Dim:
    return _binary(a, b, lambda x, y: x - y)


def dim_mul(a: Dim, b: Dim) -> Dim:
    return _binary(a, b, lambda x, y: x * y)


def dim_neg(a: Dim) -> Dim:
    return dim_sub(0, a)


def dim_floordiv(a: Dim, k: int) -> Dim:
    """``a // k`` for a positive int `k`; "?" when it is not exact for a symbolic `a`."""
    if isinstance(a, int):
        return a // k
    e = parse_dim(a)
    return UNKNOWN if e is None else _dim(e.floordiv(k))


def dim_prod(dims) -> Dim:
    """The product of dims (1 for none)."""
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def dim_div(a: Dim, b: Dim) -> Dim:
    """``a / b`` when it is exact: `b` one term (``4``, ``"64*batch_size"``) dividing
    every term of `a`; "?" otherwise."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b if b and a % b == 0 else UNKNOWN
    ea, eb = parse_dim(a), parse_dim(b)
    if ea is None or eb is None or len(eb.terms) != 1:
        return UNKNOWN
    (mb, cb), = eb.terms.items()
    if cb == 0:
        return UNKNOWN
    out: dict[Monomial, int] = {}
    for m, c in ea.terms.items():
        rest = list(m)
        for s in mb:
            if s not in rest:
                return UNKNOWN
            rest.remove(s)
        if c % cb:
            return UNKNOWN
        out[tuple(rest)] = c // cb
    return _dim(Expr(out))


def dim_value(d: Dim, env: Mapping[str, int]) -> int:
    """The dim's size once the symbols are bound; KeyError names an unbound symbol."""
    if isinstance(d, int):
        return d
    e = parse_dim(d)
    if e is None:
        raise ValueError(f"dim {d!r} has no value")
    return e.value(env)


def dim_bound(d: Dim, ranges: Mapping[str, tuple[int, int]]) -> int | None:
    """The largest size `d` can take over `ranges`; None when a symbol is unbounded."""
    if isinstance(d, int):
        return d
    e = parse_dim(d)
    if e is None or any(s not in ranges for m in e.terms for s in m):
        return None
    return e.bound(ranges)


def parse_ranges(raw) -> dict[str, tuple[int, int]]:
    """A graph's ``dim_ranges`` attribute (``[["sequence_length", 1, 64], ...]``) as a dict."""
    return {str(n): (int(lo), int(hi)) for n, lo, hi in raw or ()}


def symbols(d: Dim) -> set[str]:
    """The symbol names in a dim."""
    e = parse_dim(d) if not isinstance(d, int) else None
    return set() if e is None else {s for m in e.terms for s in m}
