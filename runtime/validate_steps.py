"""Check every step of a loaded program against the op declarations the compiler uses.

`runtime.validate` checks each field of an `.om` on its own (references, ranges,
schemas); a program can pass all of that and still not be one the compiler could
have written: a Conv whose pads were edited, a MaxPool rewired to a value of
another shape, a ReduceMean without its ``keepdims``.  Such a step used to fail
only when it ran (a shape mismatch, exit 1).  Here each step is rebuilt as an
IR op from what the `.om` stores — its kind, its operands' declared types (a
weight as a ``const`` op holding it, so inference sees constant shapes, axes and
pads), its attributes with the declaration's defaults, its results' declared
types — and the declaration's type inference (`ir.registry`, the same function
`ir.verify` calls) must give the types the program declares:

    step 1 (fused.conv '/conv2/Conv').outputs[0]: the program declares
    tensor<1x32x8x8xf32>, the op's type inference gives tensor<1x32x9x8xf32>

A dim compares as a polynomial (``"2*N"`` equals ``"N + N"``); ``"?"`` on
either side matches anything, as inference cannot be sharper than ONNX's.

A kind without a declaration (an opaque ONNX op) keeps its declared types, as in
`ir.verify`, but it must have a runtime kernel or an ONNX schema that
``onnx.reference`` can run, so an unknown kernel name is rejected at load.  What
the kernels rely on and inference does not look at is checked here too: operands
ONNX types as integer indices only (a Slice's steps, a Reshape's shape) are
integers, a null attribute does not stand in for a default, no ``act`` where the
op declares none, and the program's inputs and outputs match their values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import numpy as np

from ir.core import Op, Value
from ir.registry import OpDef, epilogue_names, lookup
from ir.symbolic import parse_dim
from ir.types import DType, TensorType
from runtime.validate_arena import check_arena

__all__ = ["StepTypes", "check_program"]

Fail = Callable[[str, str], None]
_READ_UNDECLARED = ("act",)  # attributes some kernels read whether or not their op declares them


def _dim_equal(a: Any, b: Any) -> bool:
    if a == b or a == "?" or b == "?":
        return True
    if isinstance(a, int) and isinstance(b, int):
        return False
    ea, eb = parse_dim(a), parse_dim(b)
    return ea is None or eb is None or ea.terms == eb.terms


def _shape_equal(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(_dim_equal(x, y) for x, y in zip(a, b))


@cache
def _epilogues() -> frozenset[str]:
    """`ir.registry.epilogue_names`, once: the registry is complete when the loader runs."""
    return epilogue_names()


def _type_equal(declared: TensorType, inferred: TensorType) -> bool:
    return (declared.dtype == inferred.dtype and declared.rank == inferred.rank
            and all(_dim_equal(a, b) for a, b in zip(declared.shape, inferred.shape)))


def _has_kernel(kind: str, opset: Any) -> bool:
    """A native kernel, or an ONNX schema for ``onnx.reference`` (what `Session` would use)."""
    from onnx import defs

    from runtime.kernels import lookup_kernel
    from runtime.kernels.aicpu import split_kind

    if lookup_kernel(kind) is not None:
        return True
    domain, op_type = split_kind(kind)
    try:
        version = int(opset) if opset is not None else defs.onnx_opset_version()
        return bool(op_type) and defs.has(op_type, version, domain)
    except Exception:  # noqa: BLE001 - an unknown domain or a version onnx rejects: no schema
        return False


class StepTypes:
    """Rebuilds the program's dataflow as IR values, one step at a time (see the module
    docstring).  `fail(where, msg)` raises the loader's `InvalidOmError`."""

    def __init__(self, acts: list[dict[str, Any]], weights: Mapping[str, np.ndarray], kv_cache: list[Any],
                 fail: Fail) -> None:
        self.acts, self.weights, self.fail = acts, weights, fail
        self.values: dict[tuple[str, Any], Value] = {}
        # a compressed KV cache's step writes the stored cache; its present (result 0) is no step's
        self.present_of = {e["act"]: e["present_act"] for e in kv_cache if "present_act" in e}

    def act_type(self, i: int) -> TensorType:
        a = self.acts[i]
        return TensorType(DType(a["dtype"]), tuple(a["shape"]))

    def value(self, ref: list[Any] | None) -> Value | None:
        """The IR value an operand reference stands for: a weight is a ``const`` op's result."""
        if ref is None:
            return None
        key = (ref[0], ref[1])
        v = self.values.get(key)
        if v is None:
            if ref[0] == "w":
                arr = np.asarray(self.weights[ref[1]])
                t = TensorType(DType.from_numpy(arr.dtype), arr.shape)
                v = Op("const", [], [t], {"value": arr}, [ref[1]]).result
            else:
                v = Value(self.acts[ref[1]]["name"], self.act_type(ref[1]))
            self.values[key] = v
        return v

    def check(self, w: str, step: dict[str, Any], attrs: dict[str, Any]) -> None:
        """Step `step` (label `w`, attributes with weights resolved) against its declaration."""
        kind, outs = step["kernel"], list(step["outputs"])
        od = lookup(kind)
        if od is None and not _has_kernel(kind, step.get("opset")):
            self.fail(w + ".kernel", f"no runtime kernel and no ONNX operator named {kind!r:.60}")
        if od is not None and kind == "kv.append" and outs[0] in self.present_of:
            outs.insert(0, self.present_of[outs[0]])
        operands = [self.value(r) for r in step["inputs"]]
        full = od.with_defaults(attrs) if od is not None else dict(attrs)
        op = Op(kind, operands, [self.act_type(a) for a in outs], full, [self.acts[a]["name"] for a in outs])
        for a, r in zip(outs, op.results):
            self.values[("a", a)] = r
        if od is not None:
            self.attrs_known(w, od, attrs)
            self.infer(w, od, op, outs)

    def attrs_known(self, w: str, od: OpDef, attrs: Mapping[str, Any]) -> None:
        """No null where the declaration has a default (kernels read ``attrs.get(key, default)``
        and would get None), and no undeclared attribute a kernel reads anyway: the fused
        MatMul kernels share their epilogue code and honour an ``act`` their ops do not
        declare.  Other unknown keys reach no kernel and are left alone (codegen writes
        whatever attributes an op carries)."""
        for key, spec in od.attrs.items():
            if key in attrs and attrs[key] is None and spec.default is not None:
                self.fail(f"{w}.attrs.{key}", f"null, where {od.name} defaults to {spec.default!r:.60}")
        for key in _READ_UNDECLARED:
            if key in attrs and key not in od.attrs:
                self.fail(f"{w}.attrs.{key}", f"{od.name} has no attribute {key!r:.60}")
        act = attrs.get("act")
        if act is not None and str(act).lower() not in _epilogues():
            self.fail(w + ".attrs.act", f"{act!r:.60} is not a fused activation ({', '.join(sorted(_epilogues()))})")

    def io(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """Each input is its activation (no arena slot: steps read the caller's array) and has
        its shape; each output has its value's dtype and shape; one output name, one value."""
        for i, e in enumerate(inputs):
            if self.acts[e["act"]]["offset"] != -1:
                self.fail(f"program.inputs[{i}].act", f"activation {e['act']} is a graph input: the caller's "
                                                      f"array, not an arena slot (offset -1)")
            if not _shape_equal(e["shape"], self.acts[e["act"]]["shape"]):
                self.fail(f"program.inputs[{i}].shape", f"{e['shape']} but its activation {e['act']} is "
                                                        f"{self.acts[e['act']]['shape']}")
        names: dict[str, Any] = {}
        for i, e in enumerate(outputs):
            r = e["ref"]
            have = self.acts[r[1]]["shape"] if r[0] == "a" else list(np.shape(self.weights[r[1]]))
            dt = self.acts[r[1]]["dtype"] if r[0] == "a" else DType.from_numpy(self.weights[r[1]].dtype).value
            if dt != e["dtype"]:
                self.fail(f"program.outputs[{i}].ref.dtype", f"output is {e['dtype']} but its value is {dt}")
            if not _shape_equal(e["shape"], have):
                self.fail(f"program.outputs[{i}].shape", f"{e['shape']} but its value is {have}")
            if names.setdefault(e["name"], r) != r:  # a graph may list one value twice, as ONNX allows
                self.fail(f"program.outputs[{i}].name", f"output {e['name']!r:.60} names two values")

    def infer(self, w: str, od: OpDef, op: Op, outs: list[int]) -> None:
        try:
            want = list(od.infer(op))
        except Exception as e:  # noqa: BLE001 - any failure of inference on a stored step is a bad program
            self.fail(w, f"type inference of {op.kind} fails on the stored operands and attributes: "
                         f"{str(e) or type(e).__name__:.200}")
            return
        if len(want) != len(op.results):
            self.fail(w + ".outputs", f"{len(op.results)} results, {op.kind} gives {len(want)}")
        for i, (r, t) in enumerate(zip(op.results, want)):
            if not isinstance(t, TensorType) or not _type_equal(r.type, t):
                self.fail(f"{w}.outputs[{i}]", f"the program declares {r.type} (activation {outs[i]}), "
                                               f"the op's type inference gives {t}")
        _index_dtypes(w, op, self.fail)


def check_program(c: Any) -> None:
    """The checks across fields, on `c`, a `runtime.validate` checker whose field checks passed
    (so every reference resolves and every step writes only new activations): the inputs and
    outputs, each step against its declaration (`StepTypes`), then the arena plan
    (`runtime.validate_arena`)."""
    p = c.p
    types = StepTypes(c.acts, c.weights, p.get("kv_cache", []), c.fail)
    types.io(p["inputs"], p["outputs"])
    for k, st in enumerate(p["steps"]):
        w = f"step {k} ({st['kernel']:.60} {st['name']!r:.60})"
        attrs = {key: c.attr_refs(v, f"{w}.attrs.{key}") for key, v in st["attrs"].items()}
        types.check(w, st, attrs)
    check_arena(c)


# --- what the kernels rely on and inference does not check -------------------------------
_INT_TYPES = {"tensor(int32)": DType.i32, "tensor(int64)": DType.i64}


@cache
def _index_operands(kind: str) -> tuple[tuple[int, frozenset[DType]], ...]:
    """(operand, allowed dtypes) for the operands ONNX's schema of `kind` types as integer
    indices only (a Slice's starts, a Reshape's shape): a float there reaches the kernel as
    a step count or a shape."""
    from onnx import defs

    if "." in kind or not defs.has(kind):
        return ()
    schema = defs.get_schema(kind)
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    out = []
    for i, formal in enumerate(schema.inputs):
        types = allowed.get(formal.type_str, [formal.type_str])
        if formal.option != defs.OpSchema.FormalParameterOption.Variadic and set(types) <= set(_INT_TYPES):
            out.append((i, frozenset(_INT_TYPES[t] for t in types)))
    return tuple(out)


def _index_dtypes(w: str, op: Op, fail: Fail) -> None:
    for i, allowed in _index_operands(op.kind):
        v = op.operands[i] if i < len(op.operands) else None
        if v is not None and v.type.dtype not in allowed:
            fail(f"{w}.inputs[{i}]", f"{op.kind} takes {'/'.join(sorted(t.value for t in allowed))} "
                                     f"indices here, found {v.type}")
