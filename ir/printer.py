"""The generic text form of a graph; `ir.parser.parse` is its exact inverse.

    graph @mlp(%x: tensor<1x64xf32>) -> (tensor<1x10xf32>) {
      %w = const() {value = dense_resource<"w"> : tensor<64x10xf32>} : () -> tensor<64x10xf32>
      %y = MatMul(%x, %w) : (tensor<1x64xf32>, tensor<64x10xf32>) -> tensor<1x10xf32>
      return %y
    }

Every op prints as ``%r = kind(%a, %b) {attrs} : (operand types) -> result types``.
Arrays of at most `INLINE_LIMIT` elements print inline as ``dense<[...]>``;
larger ones by reference (``dense_resource<"key">``), never in full — pass a
dict as `resources` to collect them by key.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from ir.core import Graph, Op, Value
from ir.types import DType, TensorType

__all__ = ["INLINE_LIMIT", "format_attr", "format_value_name", "print_graph", "print_op"]

INLINE_LIMIT = 16
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.\-/$]+$")
_PLAIN_SYM = re.compile(r"^(\?|[A-Z][A-Z0-9_]*)$")


def format_value_name(name: str) -> str:
    return "%" + (name if _PLAIN_NAME.match(name) else json.dumps(name, ensure_ascii=False))


def format_type(t: TensorType | None) -> str:
    if t is None:
        return "none"
    dims = "".join(
        f"{d}x" if isinstance(d, int) or _PLAIN_SYM.match(d) else f"{json.dumps(d, ensure_ascii=False)}x" for d in t.shape
    )
    return f"tensor<{dims}{t.dtype.value}>"


def _format_scalar(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        s = str(x) if isinstance(x, (np.float32, np.float16)) else repr(f)
        return s if any(c in s for c in ".e") else s + ".0"
    if isinstance(x, (str, np.str_)):
        return json.dumps(str(x), ensure_ascii=False)
    if isinstance(x, bytes):
        return json.dumps(x.decode("utf-8", "replace"), ensure_ascii=False)
    raise TypeError(f"cannot print attribute value {x!r} of type {type(x).__name__}")


def _format_array(a: np.ndarray, key: str, resources: dict[str, np.ndarray] | None) -> str:
    t = TensorType(DType.from_numpy(a.dtype) if a.dtype != object else DType.str, a.shape)
    if a.size <= INLINE_LIMIT:
        flat = a.reshape(-1)
        body = ", ".join(_format_scalar(v) for v in (flat.tolist() if a.dtype.kind not in "fc" else flat))
        return f"dense<[{body}]> : {format_type(t)}"
    if resources is not None:
        resources[key] = a
    return f"dense_resource<{json.dumps(key, ensure_ascii=False)}> : {format_type(t)}"


def format_attr(value: Any, key: str = "", resources: dict[str, np.ndarray] | None = None) -> str:
    if isinstance(value, np.ndarray):
        return _format_array(value, key, resources)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_attr(v, key, resources) for v in value) + "]"
    return _format_scalar(value)


def _format_attrs(attrs: dict[str, Any], key: str, resources: dict | None) -> str:
    if not attrs:
        return ""
    parts = []
    for k in sorted(attrs):
        akey = key if k == "value" else f"{key}.{k}"
        parts.append(f"{k} = {format_attr(attrs[k], akey, resources)}")
    return " {" + ", ".join(parts) + "}"


def print_op(op: Op, resources: dict[str, np.ndarray] | None = None) -> str:
    res = ", ".join(format_value_name(r.name) for r in op.results)
    operands = ", ".join("none" if v is None else format_value_name(v.name) for v in op.operands)
    key = op.results[0].name if op.results else op.kind
    attrs = _format_attrs(op.attrs, key, resources)
    in_types = ", ".join(format_type(None if v is None else v.type) for v in op.operands)
    out = [format_type(r.type) for r in op.results]
    out_types = out[0] if len(out) == 1 else "(" + ", ".join(out) + ")"
    lhs = f"{res} = " if res else ""
    return f"{lhs}{op.kind}({operands}){attrs} : ({in_types}) -> {out_types}"


def print_graph(g: Graph, resources: dict[str, np.ndarray] | None = None) -> str:
    args = ", ".join(f"{format_value_name(v.name)}: {format_type(v.type)}" for v in g.inputs)
    outs = ", ".join(format_type(v.type) for v in g.outputs)
    gattrs = _format_attrs(g.attrs, f"@{g.name}", resources)
    gattrs = f" attributes{gattrs}" if gattrs else ""
    name = g.name if _PLAIN_NAME.match(g.name) else json.dumps(g.name, ensure_ascii=False)
    lines = [f"graph @{name}({args}) -> ({outs}){gattrs} {{"]
    lines += [f"  {print_op(op, resources)}" for op in g.ops]
    ret = ", ".join(format_value_name(v.name) for v in g.outputs)
    lines.append(f"  return {ret}" if ret else "  return")
    lines.append("}")
    return "\n".join(lines) + "\n"


def value_label(v: Value) -> str:
    return format_value_name(v.name)
