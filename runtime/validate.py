"""Validate a loaded `.om` program before anything is allocated or run.

The sha256 at the end of an `.om` detects corruption, not tampering: anyone can
edit the header and recompute it.  So the loader trusts nothing in the file.
`validate_executable` checks the program against the op declarations the
compiler uses (`ir.registry`) and against what the `Session` will do with it:

- every reference resolves (activation index, weight name, ``{"$weight": ..}``);
- dtypes are known, shapes are non-negative ints or symbolic dims that parse and
  whose symbols ``program["dims"]`` bounds, with a bounded element count;
- each arena slot lies inside the arena; the arena fits the SoC's DDR and the
  host limit (``ATCPY_OM_MAX_BYTES``, or `load_executable(max_bytes=...)`;
  default: half the physical memory, at most 64 GiB);
- operand counts and attributes match the op's schema; the attributes the
  kernels loop on are in range (strides, kernel_shape, dilations >= 1, windows
  within the padded input, pads >= 0, axes within the rank);
- steps read only graph inputs, weights and values an earlier step wrote; KV cache
  entries name existing activations with sane capacities;
- each step's result types are its op's inference (`runtime.validate_steps`); values
  live at once share no arena bytes (`runtime.validate_arena`).

A violation raises `InvalidOmError` naming the step and field (``m.om: step 2
(MaxPool '/pool').attrs.kernel_shape[0]: window 4294967297 does not fit the padded input (10)``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ir.registry import lookup
from ir.symbolic import parse_dim, symbols
from ir.types import DType
from runtime.errors import InvalidOmError
from runtime.validate_steps import check_program

__all__ = ["MAX_JSON_DEPTH", "check_json_depth", "host_limit", "soc_ddr_bytes", "validate_executable"]

MAX_JSON_DEPTH = 64
MAX_DIM_TEXT = 256  # a symbolic dim's text (the dim parser recurses per parenthesis)
MAX_SYMBOL = 1 << 40  # a symbol's upper bound
MAX_COUNT = 1 << 20  # steps, activations, inputs, outputs, kv caches
DEFAULT_HOST_CAP = 64 << 30
_SOC_DIR = Path(__file__).resolve().parents[1] / "passes" / "target" / "soc"
_NOT_SLIDING = ("ConvTranspose", "MaxUnpool", "Col2Im", "Pad")
_SOC_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# --- limits -------------------------------------------------------------------------------
def host_limit(max_bytes: int | None = None) -> int:
    """The most memory a loaded program may ask for: `max_bytes`, else ``ATCPY_OM_MAX_BYTES``,
    else half the physical memory (at most 64 GiB)."""
    if max_bytes is not None:
        return int(max_bytes)
    env = os.environ.get("ATCPY_OM_MAX_BYTES")
    if env:
        try:
            return int(env)
        except ValueError:
            raise InvalidOmError(f"ATCPY_OM_MAX_BYTES={env!r} is not a number of bytes") from None
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_HOST_CAP
    return min(DEFAULT_HOST_CAP, max(phys // 2, 1 << 30))


def soc_ddr_bytes(soc: str) -> int | None:
    """The DDR size of SoC `soc` from its JSON model (None: no model here to read)."""
    path = _SOC_DIR / f"{soc}.json"
    try:
        v = json.loads(path.read_text())["ddr_bytes"]
        return int(v["value"] if isinstance(v, dict) else v)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_json_depth(raw: bytes, what: str, name: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Reject JSON nested deeper than `limit` before `json.loads` recurses into it."""
    text = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", raw)  # brackets inside strings do not nest
    br = np.frombuffer(text.translate(None, bytes(set(range(256)) - set(b"[]{}"))), np.uint8)
    step = np.where((br == ord("[")) | (br == ord("{")), 1, -1)
    depth = int(np.cumsum(step, dtype=np.int64).max()) if br.size else 0
    if depth > limit:
        raise InvalidOmError(f"{name}: {what} JSON is nested {depth} deep (at most {limit})")


# --- the validator ------------------------------------------------------------------------
class _Check:
    def __init__(self, header: Any, weights: Mapping[str, np.ndarray], name: str, limit: int) -> None:
        self.name, self.weights, self.limit = name, weights, limit
        self.over = f"exceed the host limit of {limit} bytes (ATCPY_OM_MAX_BYTES or max_bytes= sets it)"
        if not isinstance(header, dict):
            self.fail("header", "is not a JSON object")
        self.h = header
        self.p = self.dict_(header.get("program"), "program")
        self.ranges: dict[str, tuple[int, int]] = {}
        self.acts: list[dict[str, Any]] = []
        self.ranks: list[int] = []

    def fail(self, where: str, msg: str) -> NoReturn:
        raise InvalidOmError(f"{self.name}: {where}: {msg}")

    def dict_(self, x: Any, where: str) -> dict[str, Any]:
        if not isinstance(x, dict):
            self.fail(where, f"expected an object, found {type(x).__name__}")
        return x

    def list_(self, x: Any, where: str, most: int = MAX_COUNT) -> list[Any]:
        if not isinstance(x, list):
            self.fail(where, f"expected a list, found {type(x).__name__}")
        if len(x) > most:
            self.fail(where, f"{len(x)} entries (at most {most})")
        return x

    def int_(self, x: Any, where: str, lo: int, hi: int) -> int:
        if not _is_int(x):
            self.fail(where, f"expected an integer, found {x!r:.60}")
        if not lo <= x <= hi:
            self.fail(where, f"{x} is out of range [{lo}, {hi}]")
        return x

    def str_(self, x: Any, where: str, none: bool = False) -> str | None:
        if x is None and none:
            return None
        if not isinstance(x, str):
            self.fail(where, f"expected a string, found {type(x).__name__}")
        return x

    def dtype(self, x: Any, where: str) -> np.dtype:
        try:
            return DType(x).numpy
        except (ValueError, TypeError):
            self.fail(where, f"unknown dtype {x!r:.60}")

    # -- header, dims, activations, memory ---------------------------------------------------
    def header(self) -> None:
        h = self.h
        self.str_(h.get("model"), "model", none=True)
        soc = self.str_(h.get("soc_version"), "soc_version", none=True)
        if soc is not None and not _SOC_NAME.fullmatch(soc):
            self.fail("soc_version", f"{soc!r:.60} is not a SoC name")
        for key in ("options", "report"):
            if key in h:
                self.dict_(h[key], key)
        if self.p.get("opset") is not None:
            self.int_(self.p["opset"], "program.opset", 1, 1000)
        dims = self.dict_(self.p.get("dims", {}), "program.dims")
        for sym, b in dims.items():
            w = f"program.dims.{sym}"
            b = self.list_(b, w, 2)
            if len(b) != 2:
                self.fail(w, "expected [lo, hi]")
            lo = self.int_(b[0], w + "[0]", 0, MAX_SYMBOL)
            self.ranges[sym] = (lo, self.int_(b[1], w + "[1]", lo, MAX_SYMBOL))
        if "gears" in self.p:
            self.gears(self.dict_(self.p["gears"], "program.gears"))

    def gears(self, g: dict[str, Any]) -> None:
        names = self.list_(g.get("dims"), "program.gears.dims", 64)
        for i, s in enumerate(names):
            if s not in self.ranges:
                self.fail(f"program.gears.dims[{i}]", f"{s!r:.60} is not a bounded symbol")
        for i, v in enumerate(self.list_(g.get("values"), "program.gears.values", 1 << 12)):
            w = f"program.gears.values[{i}]"
            if len(self.list_(v, w, 64)) != len(names):
                self.fail(w, f"expected {len(names)} values")
            for j, x in enumerate(v):
                self.int_(x, f"{w}[{j}]", *self.ranges[names[j]])

    def shape(self, x: Any, where: str, itemsize: int, bounded: bool) -> int | None:
        """Check a shape; returns its element count at the bounds (None: unbounded)."""
        count: int | None = 1
        for k, d in enumerate(self.list_(x, where, 64)):
            w = f"{where}[{k}]"
            if _is_int(d):
                b: int | None = self.int_(d, w, 0, 1 << 62)
            elif isinstance(d, str) and len(d) <= MAX_DIM_TEXT:
                e = parse_dim(d)
                if e is None and d != "?":
                    self.fail(w, f"dim {d!r} does not parse")
                free = [s for s in symbols(d) if s not in self.ranges]
                if bounded and (e is None or free):
                    self.fail(w, f"dim {d!r} is not bounded by program.dims")
                b = None if e is None or free else e.bound(self.ranges)
                if b is not None and b < 0:
                    self.fail(w, f"dim {d!r} can be negative ({b})")
            else:
                self.fail(w, f"expected an int or a symbolic dim, found {d!r:.60}")
            count = None if count is None or b is None else count * b
        if count is not None and count * max(itemsize, 1) > self.limit:
            self.fail(where, f"{count} elements of {itemsize} bytes {self.over}")
        return count

    def activations(self) -> None:
        for i, a in enumerate(self.list_(self.p.get("activations"), "program.activations")):
            w = f"activation {i}"
            a = self.dict_(a, w)
            self.str_(a.get("name"), w + ".name")
            dt = self.dtype(a.get("dtype"), w + ".dtype")
            off = self.int_(a.get("offset"), w + ".offset", -1, 1 << 62)
            nb = self.int_(a.get("nbytes"), w + ".nbytes", -1, 1 << 62)
            count = self.shape(a.get("shape"), w + ".shape", dt.itemsize, off >= 0)
            if off >= 0:
                if dt.kind == "O":
                    self.fail(w + ".offset", f"a {a['dtype']} value cannot live in the arena")
                if count is None or nb < count * dt.itemsize:
                    self.fail(w + ".nbytes", f"{nb} bytes do not hold shape {a['shape']} of {a['dtype']}")
                if all(_is_int(d) for d in a["shape"]) and nb != count * dt.itemsize:
                    self.fail(w + ".nbytes", f"{nb} bytes, shape {a['shape']} of {a['dtype']} needs "
                                             f"{count * dt.itemsize}")
            self.acts.append(a)
            self.ranks.append(len(a["shape"]))

    def memory(self) -> None:
        mem = self.dict_(self.h.get("memory", {}), "memory")
        arena = self.int_(mem.get("arena_bytes", 0), "memory.arena_bytes", 0, 1 << 62)
        for i, a in enumerate(self.acts):
            if a["offset"] >= 0 and a["offset"] + a["nbytes"] > arena:
                self.fail(f"activation {i}.offset", f"[{a['offset']}, {a['offset'] + a['nbytes']}) lies "
                                                    f"outside the arena of {arena} bytes")
        soc = self.h.get("soc_version")
        ddr = soc_ddr_bytes(soc) if soc else None
        if ddr is not None and arena > ddr:
            self.fail("memory.arena_bytes", f"{arena} bytes exceed {soc}'s DDR ({ddr} bytes)")
        if arena > self.limit:
            self.fail("memory.arena_bytes", f"{arena} bytes {self.over}")

    # -- references ------------------------------------------------------------------------
    def ref(self, r: Any, where: str, none: bool = True) -> tuple[str, Any] | None:
        if r is None and none:
            return None
        if not isinstance(r, list) or len(r) != 2 or r[0] not in ("a", "w"):
            self.fail(where, f"expected [\"a\", index] or [\"w\", name], found {r!r:.60}")
        if r[0] == "a":
            self.int_(r[1], where, 0, len(self.acts) - 1)
        elif not isinstance(r[1], str) or r[1] not in self.weights:
            self.fail(where, f"no weight named {r[1]!r:.60}")
        return r[0], r[1]

    def bound(self, d: Any) -> int | None:
        """A symbolic dim's bound (None: unknown or unbounded)."""
        e = parse_dim(d) if isinstance(d, str) else None
        if e is None or any(s not in self.ranges for s in symbols(d)):
            return None
        return e.bound(self.ranges)

    def rank_of(self, r: tuple[str, Any] | None) -> int | None:
        if r is None:
            return None
        return self.ranks[r[1]] if r[0] == "a" else np.ndim(self.weights[r[1]])

    def io(self) -> None:
        names: set[str] = set()
        for i, e in enumerate(self.list_(self.p.get("inputs"), "program.inputs")):
            w = f"program.inputs[{i}]"
            e = self.dict_(e, w)
            n = self.str_(e.get("name"), w + ".name")
            if n in names:
                self.fail(w + ".name", f"input {n!r} appears twice")
            names.add(n)
            dt = self.dtype(e.get("dtype"), w + ".dtype")
            self.shape(e.get("shape"), w + ".shape", dt.itemsize, False)
            a = self.int_(e.get("act"), w + ".act", 0, len(self.acts) - 1)
            if self.acts[a]["dtype"] != e["dtype"] or len(self.acts[a]["shape"]) != len(e["shape"]):
                self.fail(w + ".act", f"activation {a} is not a {e['dtype']} of rank {len(e['shape'])}")
        for i, e in enumerate(self.list_(self.p.get("outputs"), "program.outputs")):
            w = f"program.outputs[{i}]"
            e = self.dict_(e, w)
            self.str_(e.get("name"), w + ".name")
            dt = self.dtype(e.get("dtype"), w + ".dtype")
            self.shape(e.get("shape"), w + ".shape", dt.itemsize, False)
            self.ref(e.get("ref"), w + ".ref", none=False)

    def attr_refs(self, v: Any, where: str) -> Any:
        """`v` with its ``{"$weight": name}`` references resolved (checked)."""
        if isinstance(v, dict) and len(v) == 1 and "$weight" in v:
            if not isinstance(v["$weight"], str) or v["$weight"] not in self.weights:
                self.fail(where, f"no weight named {v['$weight']!r:.60}")
            return self.weights[v["$weight"]]
        if isinstance(v, list):
            return [self.attr_refs(x, f"{where}[{i}]") for i, x in enumerate(v)]
        return v

    def run(self) -> None:
        self.header()
        self.activations()
        self.memory()
        self.io()
        _Steps(self).run()
        check_program(self)


class _Steps:
    """The program's steps, KV caches and outputs (see the module docstring)."""

    def __init__(self, c: _Check) -> None:
        self.c = c
        self.written = {e["act"] for e in c.p["inputs"]}
        self.presents: set[int] = set()  # compressed caches' presents: read back, no step writes them

    def run(self) -> None:
        c = self.c
        kv = self.kv_cache()
        for k, st in enumerate(c.list_(c.p.get("steps"), "program.steps")):
            self.step(k, st)
        for i in kv:
            if i not in self.written:
                c.fail(f"program.kv_cache activation {i}", "no step writes it")
        for i, e in enumerate(c.p["outputs"]):
            w, r = f"program.outputs[{i}].ref", e["ref"]
            if r[0] == "a" and r[1] not in self.written and r[1] not in self.presents:
                c.fail(w, f"activation {r[1]} is never written")

    def step(self, k: int, st: Any) -> None:
        c = self.c
        st = c.dict_(st, f"step {k}")
        kernel = c.str_(st.get("kernel"), f"step {k}.kernel")
        name = c.str_(st.get("name"), f"step {k}.name")
        w = f"step {k} ({kernel:.60} {name!r:.60})"
        c.str_(st.get("engine"), w + ".engine")
        if "opset" in st:
            c.int_(st["opset"], w + ".opset", 1, 1000)
        if not isinstance(st.get("nondeterministic", False), bool):
            c.fail(w + ".nondeterministic", "expected a boolean")
        refs = [c.ref(r, f"{w}.inputs[{i}]") for i, r in enumerate(c.list_(st.get("inputs"), w + ".inputs", 4096))]
        for i, r in enumerate(refs):
            if r is not None and r[0] == "a" and r[1] not in self.written:
                c.fail(f"{w}.inputs[{i}]", f"reads activation {r[1]} before any step writes it")
        outs = c.list_(st.get("outputs"), w + ".outputs", 4096)
        if not outs:
            c.fail(w + ".outputs", "a step must have a result")
        for i, a in enumerate(outs):
            c.int_(a, f"{w}.outputs[{i}]", 0, len(c.acts) - 1)
            if a in self.written:
                c.fail(f"{w}.outputs[{i}]", f"activation {a} is already written (graph input or earlier step)")
            self.written.add(a)
        raw = c.dict_(st.get("attrs"), w + ".attrs")
        attrs = {key: c.attr_refs(v, f"{w}.attrs.{key}") for key, v in raw.items()}
        cc = attrs.get("cost_cycles")
        if cc is not None and not isinstance(cc, (int, float)):
            c.fail(w + ".attrs.cost_cycles", "expected a number")
        self.schema(w, kernel, refs, attrs)
        ranks = [r for r in (c.rank_of(x) for x in refs) if r is not None] + [c.ranks[a] for a in outs]
        self.axes(w, attrs, max(ranks, default=0))
        self.window(w, kernel, attrs, refs)
        if kernel == "sym.dims":
            self.sym_dims(w, attrs, outs)

    def schema(self, w: str, kernel: str, refs: list, attrs: dict[str, Any]) -> None:
        c, od = self.c, lookup(kernel)
        if od is None:
            return  # an opaque ONNX op: onnx.reference checks it when the Session builds its kernel
        hi = od.max_operands
        if len(refs) < od.min_operands or (hi is not None and len(refs) > hi):
            want = f"{od.min_operands}" + ("+" if hi is None else "" if hi == od.min_operands else f"..{hi}")
            c.fail(w + ".inputs", f"{len(refs)} operands, {kernel} takes {want}")
        for key, spec in od.attrs.items():
            if key not in attrs:
                if spec.required:
                    c.fail(f"{w}.attrs.{key}", "required attribute missing")
                continue
            v = attrs[key]
            if v is not None and not spec.check(v):
                c.fail(f"{w}.attrs.{key}", f"expected {spec.kind}, found {v!r:.60}")

    def axes(self, w: str, attrs: dict[str, Any], rank: int) -> None:
        c = self.c
        if attrs.get("axis") is not None:
            c.int_(attrs["axis"], w + ".attrs.axis", -rank - 1, rank)
        if attrs.get("axes") is not None and not isinstance(attrs["axes"], np.ndarray):
            for i, a in enumerate(c.list_(attrs["axes"], w + ".attrs.axes", 64)):
                c.int_(a, f"{w}.attrs.axes[{i}]", -rank - 1, rank)
        if attrs.get("group") is not None:
            c.int_(attrs["group"], w + ".attrs.group", 1, 1 << 24)

    def window(self, w: str, kernel: str, attrs: dict[str, Any], refs: list) -> None:
        """kernel_shape, strides, dilations >= 1, pads >= 0, each window inside the padded input."""
        c = self.c
        keys = [k for k in ("kernel_shape", "strides", "dilations", "pads") if attrs.get(k) is not None]
        if not keys or kernel in _NOT_SLIDING or keys == ["pads"] and "conv" not in kernel.lower():
            return  # (a Pad's pads are per axis and may crop; transposed windows outgrow their input)
        vals = {}
        for key in keys:
            v = c.list_(attrs[key], f"{w}.attrs.{key}", 16)
            vals[key] = [c.int_(x, f"{w}.attrs.{key}[{i}]", 0 if key == "pads" else 1, 1 << 31)
                         for i, x in enumerate(v)]
        x = refs[0] if refs else None
        dims = c.acts[x[1]]["shape"][2:] if x is not None and x[0] == "a" else None
        if x is not None and x[0] == "w":
            dims = list(np.shape(c.weights[x[1]]))[2:]
        kern = vals.get("kernel_shape")
        if kern is None and len(refs) > 1 and refs[1] is not None and refs[1][0] == "w":
            kern = list(np.shape(c.weights[refs[1][1]]))[2:]  # a Conv's window is its weight's
        n = len(dims) if dims is not None else len(kern or [])
        for key in keys:
            if len(vals[key]) != (2 * n if key == "pads" else n):
                c.fail(f"{w}.attrs.{key}", f"{len(vals[key])} values for {n} spatial dims")
        if kern is None or len(kern) != n:
            return
        pads = vals.get("pads", [0] * 2 * n)
        dil = vals.get("dilations", [1] * n)
        same = str(attrs.get("auto_pad") or "NOTSET") not in ("NOTSET", "VALID")
        for i, k in enumerate(kern):
            eff = (k - 1) * dil[i] + 1
            d = dims[i] if dims is not None else None
            size = d if _is_int(d) else c.bound(d)
            if size is None:
                size = 0
            padded = size + (eff - 1 if same else pads[i] + pads[i + n])
            if max(pads[i], pads[i + n]) > max(eff, size):
                c.fail(f"{w}.attrs.pads", f"pad {max(pads[i], pads[i + n])} exceeds both the window ({eff}) "
                                          f"and the input ({size})")
            if size and eff > padded:
                c.fail(f"{w}.attrs.kernel_shape[{i}]", f"window {eff} does not fit the padded input ({padded})")

    def sym_dims(self, w: str, attrs: dict[str, Any], outs: list[int]) -> None:
        c = self.c
        dims = c.list_(attrs.get("dims"), w + ".attrs.dims", 64)
        for i, d in enumerate(dims):
            if not _is_int(d) and not (isinstance(d, str) and len(d) <= MAX_DIM_TEXT):
                c.fail(f"{w}.attrs.dims[{i}]", f"expected an int or a symbolic dim, found {d!r:.60}")
        shape = c.list_(attrs.get("shape"), w + ".attrs.shape", 8)
        n = math.prod(c.int_(s, f"{w}.attrs.shape[{i}]", 0, 64) for i, s in enumerate(shape))
        if n != len(dims) or len(outs) != 1:
            c.fail(w + ".attrs.shape", f"shape {shape} does not hold {len(dims)} dims in one result")

    def kv_cache(self) -> set[int]:
        c, total, longest = self.c, 0, 0
        stored = set()
        for k, e in enumerate(c.list_(c.p.get("kv_cache", []), "program.kv_cache", 4096)):
            w = f"program.kv_cache[{k}]"
            e = c.dict_(e, w)
            a = c.int_(e.get("act"), w + ".act", 0, len(c.acts) - 1)
            c.str_(e.get("past"), w + ".past", none=True)
            c.str_(e.get("present"), w + ".present")
            if c.acts[a]["offset"] != -1 or a in stored:
                c.fail(w + ".act", f"activation {a} has an arena slot or another cache")
            stored.add(a)
            cap = self.capacity(e.get("capacity"), w + ".capacity", a)
            if cap is not None:
                c.int_(e.get("axis"), w + ".axis", 0, len(cap) - 1)
                total += math.prod(cap) * DType(c.acts[a]["dtype"]).numpy.itemsize
            if "dtype" in e and e["dtype"] not in ("f16", "i8"):
                c.fail(w + ".dtype", f"{e['dtype']!r:.60} is not a cache dtype (f16, i8)")
            if "present_act" in e:
                p = c.int_(e["present_act"], w + ".present_act", 0, len(c.acts) - 1)
                self.presents.add(p)
                if cap is not None:
                    longest = max(longest, cap[e["axis"]])
            if "scale" in e:
                s = c.int_(e["scale"], w + ".scale", 0, len(c.acts) - 1)
                scap = self.capacity(e.get("scale_capacity"), w + ".scale_capacity", s)
                if scap is None and cap is not None:
                    c.fail(w + ".scale_capacity", "a bounded cache needs bounded scales")
                total += math.prod(scap or [0]) * DType(c.acts[s]["dtype"]).numpy.itemsize
        total += 8 * longest
        if total > c.limit:
            c.fail("program.kv_cache", f"{total} bytes of KV cache {c.over}")
        return stored

    def capacity(self, cap: Any, w: str, act: int) -> list[int] | None:
        c = self.c
        shape = c.acts[act]["shape"]
        if len(c.list_(cap, w, 64)) != len(shape):
            c.fail(w, f"{len(cap)} dims for activation {act} of rank {len(shape)}")
        if any(x is None for x in cap):
            return None
        for i, x in enumerate(cap):
            c.int_(x, f"{w}[{i}]", 0, MAX_SYMBOL)
            b = shape[i] if _is_int(shape[i]) else c.bound(shape[i])
            if b is not None and x < b:
                c.fail(f"{w}[{i}]", f"capacity {x} is below the dim's bound {b}")
        return cap


def validate_executable(header: Any, weights: Mapping[str, np.ndarray], *, name: str = "<bytes>",
                        max_bytes: int | None = None) -> None:
    """Check a loaded header and its weights; raises `InvalidOmError` naming the field."""
    limit = host_limit(max_bytes)
    try:
        _Check(header, weights, name, limit).run()
    except RecursionError:
        raise InvalidOmError(f"{name}: the program nests too deeply") from None
