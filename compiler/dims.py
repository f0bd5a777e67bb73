"""Bounds of the model's symbolic dims, from the command line.

``--dim_range="sequence_length:1~64;past_sequence_length:0~63"`` bounds symbols
by name (onnxruntime's free-dimension override, with ranges); ATC's per-input
``--input_shape_range="input_ids:[1,1~64];past:[1,2,0~63,16]"`` bounds the
named dims of one input by position.  The bounds become the graph attribute
``dim_ranges``: the memory plan sizes each tensor for them, and the runtime
rejects a feed outside them (exit 5).

    parse_dim_range("sequence_length:1~64;batch_size:1~4") -> {"batch_size": (1, 4), "sequence_length": (1, 64)}

ATC's gears (``--input_shape="data:-1,3,224,224" --dynamic_batch_size="1,2,4,8"``)
are symbols that take only the listed values: one `.om`, one copy of the weights,
one memory plan at the largest gear; the runtime rejects a shape between gears.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ir.core import Graph
from ir.errors import UsageError
from ir.symbolic import symbols

__all__ = ["apply_dim_ranges", "apply_gears", "gear_ranges", "parse_dim_range", "parse_input_shape_range"]

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


# --- ATC's gears -----------------------------------------------------------------------------
GEAR_FLAGS = ("--dynamic_batch_size", "--dynamic_image_size", "--dynamic_dims")
MAX_GEARS = 100


def _gear_values(flag: str, spec: str, arity: int | None) -> list[list[int]]:
    sep = "," if flag == "--dynamic_batch_size" else ";"
    gears = []
    for part in spec.split(sep):
        if not part.strip():
            continue
        try:
            vals = [int(x) for x in part.split(",")] if sep == ";" else [int(part)]
        except ValueError:
            raise UsageError(f"{flag}: expected integers, got {part!r}") from None
        if any(v < 1 for v in vals):
            raise UsageError(f"{flag}: every size must be at least 1, got {part!r}")
        if arity is not None and len(vals) != arity:
            raise UsageError(f"{flag}: each gear needs {arity} value(s) (one per -1 in --input_shape), got {part!r}")
        gears.append(vals)
    if not 2 <= len(gears) <= MAX_GEARS:
        raise UsageError(f"{flag}: give between 2 and {MAX_GEARS} gears, got {len(gears)}")
    if len({tuple(g) for g in gears}) != len(gears):
        raise UsageError(f"{flag}: gears must be distinct, got {spec!r}")
    return gears


def apply_gears(shapes: dict[str, list] | None, flags: Mapping[str, str | None]) -> tuple[dict | None, list]:
    """ATC's gears: the -1 dims of ``--input_shape`` become symbols (``batch``;
    ``height``/``width``; ``dim0``, ``dim1``, ...) taking only the listed values.
    Returns the shapes with symbols and ``[[symbols...], [values...], ...]`` (the
    graph's ``dim_gears``), or ``[]`` without gears."""
    given = [(f, v) for f, v in flags.items() if v]
    holes = [(n, i) for n, dims in (shapes or {}).items() for i, d in enumerate(dims) if d == -1]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(f for f, _ in given)} exclude each other: give one")
    if not given:
        if holes:
            raise UsageError("--input_shape: -1 needs one of " + ", ".join(GEAR_FLAGS)
                             + " (or name the dim in the model and bound it with --dim_range)")
        return shapes, []
    flag, spec = given[0]
    if not holes:
        raise UsageError(f"{flag} needs --input_shape with -1 where the size changes")
    out = {n: list(d) for n, d in shapes.items()}
    if flag == "--dynamic_batch_size":
        if any(i != 0 for _, i in holes):
            raise UsageError("--dynamic_batch_size: -1 may only stand for the batch (the first dim) in --input_shape")
        syms = ["batch"]
        for n, i in holes:
            out[n][i] = "batch"
    elif flag == "--dynamic_image_size":
        per_input = {n: [i for m, i in holes if m == n] for n, _ in holes}
        if any(len(ix) != 2 for ix in per_input.values()):
            raise UsageError("--dynamic_image_size: each image input needs exactly two -1 (height, width) "
                             "in --input_shape")
        syms = ["height", "width"]
        for n, (ih, iw) in per_input.items():
            out[n][ih], out[n][iw] = "height", "width"
    else:
        syms = [f"dim{k}" for k in range(len(holes))]
        for (n, i), s in zip(holes, syms):
            out[n][i] = s
    values = _gear_values(flag, spec, len(syms))
    return out, [syms, *values]


def gear_ranges(gears: list) -> dict[str, tuple[int, int]]:
    """Each gear symbol's range: the plan is made at the largest gear."""
    if not gears:
        return {}
    syms, values = gears[0], gears[1:]
    return {s: (min(v[k] for v in values), max(v[k] for v in values)) for k, s in enumerate(syms)}
