"""Bounds of the model's symbolic dims, from the command line.

``--dim_range="sequence_length:1~64;past_sequence_length:0~63"`` bounds symbols
by name (onnxruntime's free-dimension override, with ranges); ATC's per-input
``--input_shape_range="input_ids:[1,1~64];past:[1,2,0~63,16]"`` bounds the
named dims of one input by position.  The bounds become the graph attribute
``dim_ranges``: the memory plan sizes each tensor for them, and the runtime
rejects a feed outside them (exit 5).

    parse_dim_range("sequence_length:1~64;batch_size:1~4") -> {"batch_size": (1, 4), "sequence_length": (1, 64)}
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ir.core import Graph
from ir.errors import UsageError
from ir.symbolic import symbols

__all__ = ["apply_dim_ranges", "parse_dim_range", "parse_input_shape_range"]

_RANGE = re.compile(r"^\s*(\d+)\s*(?:~\s*(\d+))?\s*$")


def _range(text: str, flag: str, what: str) -> tuple[int, int]:
    m = _RANGE.match(text)
    if not m:
        raise UsageError(f"{flag}: {what}: expected N or LO~HI (non-negative integers), got {text!r}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < lo:
        raise UsageError(f"{flag}: {what}: empty range {lo}~{hi}")
    return lo, hi


def parse_dim_range(spec: str | None) -> dict[str, tuple[int, int]]:
    """``"name:lo~hi;name2:n"`` -> {name: (lo, hi)}."""
    out: dict[str, tuple[int, int]] = {}
    for part in (spec or "").split(";"):
        if not part.strip():
            continue
        name, sep, rng = part.rpartition(":")
        if not sep or not name.strip():
            raise UsageError(f'--dim_range: expected "symbol:LO~HI", got {part!r}')
        out[name.strip()] = _range(rng, "--dim_range", name.strip())
    return out


def parse_input_shape_range(spec: str | None) -> dict[str, list[tuple[int, int]]]:
    """``"input_ids:[1,1~64];x:[1,3,224,224]"`` -> {input: [(lo, hi) per dim]}."""
    out: dict[str, list[tuple[int, int]]] = {}
    for part in (spec or "").split(";"):
        if not part.strip():
            continue
        name, sep, dims = part.rpartition(":")
        dims = dims.strip()
        if not sep or not dims.startswith("[") or not dims.endswith("]"):
            raise UsageError(f'--input_shape_range: expected "input:[d0,LO~HI,...]", got {part!r}')
        out[name.strip()] = [_range(d, "--input_shape_range", f"{name.strip()} dim {i}")
                             for i, d in enumerate(dims[1:-1].split(","))]
    return out


def apply_dim_ranges(g: Graph, by_name: Mapping[str, tuple[int, int]],
                     by_input: Mapping[str, list[tuple[int, int]]]) -> None:
    """Record the bounds on `g` (``dim_ranges``), checking each names a symbol of
    the model's inputs and that per-input ranges agree with the input's dims."""
    ranges = dict(by_name)
    known = {s for v in g.inputs for d in v.type.shape for s in symbols(d)}
    inputs = {v.name: v for v in g.inputs}
    for name, dims in by_input.items():
        v = inputs.get(name)
        if v is None:
            raise UsageError(f"--input_shape_range: the model has no input {name!r}; its inputs are "
                             + ", ".join(repr(n) for n in inputs))
        if len(dims) != v.type.rank:
            raise UsageError(f"--input_shape_range: {name!r} has rank {v.type.rank}, got {len(dims)} dims")
        for i, ((lo, hi), d) in enumerate(zip(dims, v.type.shape)):
            if isinstance(d, int):
                if not lo <= d <= hi:
                    raise UsageError(f"--input_shape_range: {name!r} dim {i} is {d} in the model, not in {lo}~{hi}")
            elif d in known and d == d.strip() and symbols(d) == {d}:
                ranges[d] = (max(lo, ranges.get(d, (lo, hi))[0]), min(hi, ranges.get(d, (lo, hi))[1]))
            else:
                raise UsageError(f"--input_shape_range: {name!r} dim {i} ({d!r}) is not a named dim of the model; "
                                 f"bound it by name with --dim_range")
    unknown = sorted(set(ranges) - known)
    if unknown:
        raise UsageError(f"--dim_range: no input of the model has a dim named {', '.join(map(repr, unknown))}; "
                         f"its named dims are {', '.join(sorted(known)) or '(none)'}")
    if ranges:
        g.attrs["dim_ranges"] = [[k, lo, hi] for k, (lo, hi) in sorted(ranges.items())]
