"""Parse the generic text form back into a `Graph` (inverse of `ir.printer`).

    g = parse(text)                      # large constants must come in `resources`
    g = parse(text, synthesize=True)     # ... or are filled from a seeded RNG

``synthesize=True`` is for IR written by hand (pass tests, ``atcpy-opt``): a
``dense_resource<"k">`` with no array in `resources` gets deterministic values
derived from its key, so structure-level tests need no weight files.
"""

from __future__ import annotations

import json
import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from lark import Lark, Token, Transformer
from lark.exceptions import LarkError, VisitError

from ir.core import Graph, Op, Value
from ir.types import DType, TensorType

__all__ = ["MAX_DEPTH", "MAX_SYNTH_ELEMENTS", "ParseError", "check_depth", "parse", "parse_type"]


class ParseError(ValueError):
    pass


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text()
    return Lark(grammar, parser="lalr", maybe_placeholders=False)


_DIM = re.compile(r'(\d+|\?|[A-Z][A-Z0-9_]*|"(?:\\.|[^"\\])*")x')


def parse_type(text: str) -> TensorType:
    if not (text.startswith("tensor<") and text.endswith(">")):
        raise ParseError(f"not a tensor type: {text!r}")
    body = text[len("tensor<") : -1]
    dims: list[int | str] = []
    pos = 0
    while True:
        m = _DIM.match(body, pos)
        if not m:
            break
        d = m.group(1)
        dims.append(int(d) if d.isdigit() else json.loads(d) if d.startswith('"') else d)
        pos = m.end()
    try:
        dtype = DType(body[pos:])
    except ValueError:
        raise ParseError(f"unknown element type {body[pos:]!r} in {text!r}") from None
    return TensorType(dtype, tuple(dims))


def _name(tok: str) -> str:
    s = tok[1:]
    return json.loads(s) if s.startswith('"') else s


def _synthesize(key: str, t: TensorType) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    shape = tuple(int(d) for d in t.shape)
    if t.dtype.is_float:
        return (rng.standard_normal(shape) * 0.1).astype(t.dtype.numpy)
    if t.dtype is DType.bool:
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(-4, 5, shape).astype(t.dtype.numpy)


class _Build(Transformer):
    def __init__(self, resources: dict[str, np.ndarray] | None, synthesize: bool) -> None:
        super().__init__()
        self.resources = resources or {}
        self.synthesize = synthesize

    # attributes --------------------------------------------------------------
    def int(self, t):
        return int(t[0])

    def float(self, t):
        return float(t[0])

    def string(self, t):
        return json.loads(t[0])

    def true(self, _):
        return True

    def false(self, _):
        return False

    def list(self, items):
        return list(items)

    def dense(self, items):
        *vals, ty = items
        t = parse_type(str(ty))
        arr = np.array(vals, dtype=t.dtype.numpy if t.dtype is not DType.str else object)
        return arr.reshape(tuple(int(d) for d in t.shape))

    def resource(self, items):
        key, ty = json.loads(items[0]), parse_type(str(items[1]))
        if key in self.resources:
            arr = np.asarray(self.resources[key])
            if tuple(arr.shape) != t_shape(ty):
                raise ParseError(f"resource {key!r} has shape {arr.shape}, the text says {ty}")
            return arr
        if self.synthesize:
            if not ty.is_static:
                raise ParseError(f"dense_resource<{json.dumps(key)}>: cannot synthesize {ty}, its shape is not static")
            if ty.numel > MAX_SYNTH_ELEMENTS:
                raise ParseError(f"dense_resource<{json.dumps(key)}> : {ty} has {ty.numel} elements; synthesized "
                                 f"weights are limited to {MAX_SYNTH_ELEMENTS} (give the array in resources)")
            return _synthesize(key, ty)
        raise ParseError(f"no array given for dense_resource<{json.dumps(key)}>")

    def entry(self, items):
        return (str(items[0]), items[1])

    def attr_dict(self, items):
        return dict(items)

    def gattrs(self, items):
        return items[0]

    # types / operands --------------------------------------------------------
    def type(self, t):
        return parse_type(str(t[0]))

    def none(self, _):
        return None

    def value(self, t):
        return _name(t[0])

    def one_type(self, t):
        return [parse_type(str(t[0]))]

    def many_types(self, ts):
        return [parse_type(str(t)) for t in ts]

    def results(self, toks):
        return [_name(t) for t in toks]

    def ret(self, toks):
        return ("return", [_name(t) for t in toks])

    def arg(self, items):
        return (_name(items[0]), parse_type(str(items[1])))

    def gname(self, t):
        s = str(t[0])
        return json.loads(s) if s.startswith('"') else s

    def operands(self, items):
        return ("operands", list(items))

    def otypes(self, items):
        return ("otypes", list(items))

    def op(self, items):
        results: list[str] = []
        attrs: dict[str, Any] = {}
        operands: list = []
        otypes: list = []
        kind = ""
        for it in items[:-1]:
            if isinstance(it, Token):
                kind = str(it)
            elif isinstance(it, dict):
                attrs = it
            elif isinstance(it, tuple) and it[0] == "operands":
                operands = it[1]
            elif isinstance(it, tuple) and it[0] == "otypes":
                otypes = it[1]
            else:
                results = it
        return ("op", results, kind, operands, attrs, otypes, items[-1])


def t_shape(t: TensorType) -> tuple[int, ...]:
    return tuple(int(d) if isinstance(d, int) else -1 for d in t.shape)


# Nesting of attribute lists the text may have: lark's tree building and the transformer
# recurse once per level, so a deeper list would be a RecursionError, not a ParseError.
MAX_DEPTH = 64
# Elements a synthesized `dense_resource` may have (1 GiB of f32).
MAX_SYNTH_ELEMENTS = 2**28
_BRACKETS = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|[\[\]]')


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Reject lists nested deeper than `limit` before lark sees the text (strings and
    comments skipped, as the lexer does)."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        tok = m.group()
        if tok == "[":
            depth += 1
            if depth > limit:
                line = text.count("\n", 0, m.start()) + 1
                raise ParseError(f"line {line}: lists nested deeper than {limit} levels")
        elif tok == "]":
            depth = max(depth - 1, 0)


def parse(text: str, resources: dict[str, np.ndarray] | None = None, *, synthesize: bool = False) -> Graph:
    check_depth(text)
    try:
        tree = _parser().parse(text)
        built = _Build(resources, synthesize).transform(tree)
    except VisitError as e:
        raise ParseError(str(e.orig_exc)) from None
    except LarkError as e:
        raise ParseError(str(e)) from None
    graph_node = built.children[0]
    items = list(graph_node.children)
    name = items.pop(0)
    args, out_types, gattrs, ops, ret = [], [], {}, [], None
    for it in items:
        if isinstance(it, tuple) and it and it[0] == "op":
            ops.append(it)
        elif isinstance(it, tuple) and it and it[0] == "return":
            ret = it[1]
        elif isinstance(it, tuple):
            args.append(it)
        elif isinstance(it, Token):
            out_types.append(parse_type(str(it)))
        elif isinstance(it, dict):
            gattrs = it
    return _assemble(name, args, out_types, gattrs, ops, ret or [])


def _assemble(name, args, out_types, gattrs, ops, ret) -> Graph:
    g = Graph(name)
    g.attrs = gattrs
    env: dict[str, Value] = {}
    for n, t in args:
        if n in env:
            raise ParseError(f"%{n} defined twice")
        env[n] = g.add_input(n, t)
    for _, results, kind, operands, attrs, otypes, rtypes in ops:
        if len(otypes) != len(operands):
            raise ParseError(f"{kind}: {len(operands)} operands but {len(otypes)} operand types")
        if results and len(results) != len(rtypes):
            raise ParseError(f"{kind}: {len(results)} results but {len(rtypes)} result types")
        vals: list[Value | None] = []
        for o, t in zip(operands, otypes):
            if o is None:
                vals.append(None)
                continue
            if o not in env:
                raise ParseError(f"{kind}: use of undefined value %{o}")
            if env[o].type != t:
                raise ParseError(f"{kind}: %{o} has type {env[o].type}, the op says {t}")
            vals.append(env[o])
        op = Op(kind, vals, rtypes, attrs, results or None)
        g.insert(op)
        for r, rn in zip(op.results, results):
            if rn in env or r.name != rn:
                raise ParseError(f"%{rn} defined twice")
            env[rn] = r
    for n in ret:
        if n not in env:
            raise ParseError(f"return of undefined value %{n}")
        g.outputs.append(env[n])
    if [v.type for v in g.outputs] != out_types:
        got = ", ".join(str(v.type) for v in g.outputs)
        raise ParseError(f"@{name} declares results ({', '.join(map(str, out_types))}) but returns ({got})")
    return g
