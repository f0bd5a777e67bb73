"""`verify(graph)`: the invariants every pass must keep.

- every operand is defined before its use (graph input or an earlier op),
- use lists agree with operands,
- declared ops have a legal operand count, known attributes of the right kind,
  and result types equal to what their inference function says,
- value names are unique, every graph output is defined.

Acyclicity follows from "defined before use" over a linear order.
All problems are collected and raised together.
"""

from __future__ import annotations

from ir.core import Graph, Op
from ir.registry import TypeInferenceError, lookup

__all__ = ["VerifyError", "verify"]


class VerifyError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("IR verification failed:\n  " + "\n  ".join(problems))


def _check_op(op: Op, problems: list[str]) -> None:
    where = f"{op.kind} defining {', '.join('%' + r.name for r in op.results) or '(nothing)'}"
    d = lookup(op.kind)
    if d is None:
        return  # opaque op: result types are trusted
    n = len(op.operands)
    if n < d.min_operands or (d.max_operands is not None and n > d.max_operands):
        want = f"{d.min_operands}" if d.min_operands == d.max_operands else f"{d.min_operands}..{d.max_operands or ''}"
        problems.append(f"{where}: {n} operands, expected {want}")
        return
    for k, v in op.attrs.items():
        a = d.attrs.get(k)
        if a is None:
            if not k.startswith("_") and k not in ANNOTATIONS:
                problems.append(f"{where}: unknown attribute {k!r}")
        elif not a.check(v):
            problems.append(f"{where}: attribute {k}={v!r} is not of kind {a.kind}")
    for k, a in d.attrs.items():
        if a.required and k not in op.attrs:
            problems.append(f"{where}: missing required attribute {k!r}")
    try:
        want_types = d.infer(op)
    except Exception as e:  # noqa: BLE001  any failure of an inference function on this op is a problem of the IR
        msg = str(e) if isinstance(e, TypeInferenceError) else f"{type(e).__name__}: {e}"
        problems.append(f"{where}: type inference failed: {msg}")
        return
    got = [r.type for r in op.results]
    if got != list(want_types):
        problems.append(
            f"{where}: result types ({', '.join(map(str, got))}) differ from inferred "
            f"({', '.join(map(str, want_types))})"
        )


# Attributes any op may carry: annotations added by passes.
ANNOTATIONS = frozenset(
    {"engine", "reason", "tile", "tiles", "offsets", "inplace", "cost_cycles", "name", "opset",
     "domain", "quant", "precision"}
)


def verify(g: Graph) -> None:
    problems: list[str] = []
    defined: set[int] = set()
    names: set[str] = set()
    for v in g.inputs:
        defined.add(id(v))
        if v.name in names:
            problems.append(f"%{v.name} defined twice")
        names.add(v.name)
    for op in g.ops:
        for i, v in enumerate(op.operands):
            if v is None:
                continue
            if id(v) not in defined:
                problems.append(f"{op.kind}: operand {i} %{v.name} is used before it is defined")
            if not any(u.op is op and u.index == i for u in v.uses):
                problems.append(f"{op.kind}: operand {i} %{v.name} is missing from its use list")
        for r in op.results:
            if r.producer is not op:
                problems.append(f"%{r.name}: producer link is broken")
            for u in r.uses:
                if u.index >= len(u.op.operands) or u.op.operands[u.index] is not r:
                    problems.append(f"%{r.name}: stale use by {u.op.kind}")
            defined.add(id(r))
            if r.name in names:
                problems.append(f"%{r.name} defined twice")
            names.add(r.name)
        _check_op(op, problems)
    for v in g.outputs:
        if id(v) not in defined:
            problems.append(f"graph output %{v.name} is not defined")
    if problems:
        raise VerifyError(problems)
