"""Model validation before import: what onnxruntime would reject, atcpy rejects too
(exit 3, `UnsupportedModelError`), before any weight is read or function inlined.

    check_loaded(proto)            # strings, IR/opset versions, initializer dtypes, function budget
    check_with_onnx(light_model)   # onnx.checker + strict shape inference on the weight-free copy

The function budget counts the nodes inlining would produce (model-local functions
calling each other) without expanding anything: a 1.6 KB file of 24 nested functions,
each calling the next twice, would inline to 2**24 nodes.
"""

from __future__ import annotations

import onnx
import onnx.checker
import onnx.defs
import onnx.shape_inference

from ir.errors import UnsupportedModelError

__all__ = ["FULL_CHECK_NODES", "NODE_BUDGET", "check_loaded", "check_with_onnx", "count_inlined_nodes"]

# Nodes a model with local functions may have once they are inlined (a 7B LLM exported
# by torch.onnx.export has ~10k; large vision models ~100k).
NODE_BUDGET = 1 << 18
_COUNT_CAP = 1 << 62  # counts stop growing here (a chain of doubling functions is 2**depth)
# Strict shape inference (onnx.checker's full_check) runs on graphs up to this many nodes.
FULL_CHECK_NODES = 20_000
_SUBGRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_UNSUPPORTED_DTYPES = {onnx.TensorProto.BFLOAT16: "bfloat16"}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:400] + " ...") if len(text) > 400 else text or type(e).__name__


def dtype_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"unknown element type {elem_type}"


def _check_strings(proto: onnx.ModelProto) -> None:
    """Protobuf (proto2) lets a string field hold any bytes; onnxruntime rejects non-UTF-8."""
    for i, n in enumerate(proto.graph.node):
        for field in ("op_type", "domain", "name"):
            s = getattr(n, field)
            if isinstance(s, bytes):
                raise UnsupportedModelError(f"node {i} ({n.name!r}): its {field} {s!r} is not valid UTF-8")


def _check_versions(proto: onnx.ModelProto) -> None:
    if proto.ir_version > onnx.IR_VERSION:
        raise UnsupportedModelError(f"the model's IR version {proto.ir_version} is newer than this ONNX "
                                    f"release supports ({onnx.IR_VERSION})")
    latest = onnx.defs.onnx_opset_version()
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx") and not 1 <= o.version <= latest:
            raise UnsupportedModelError(f"the model imports ai.onnx opset {o.version}; the known opsets are 1..{latest}")


def _check_initializers(proto: onnx.ModelProto) -> None:
    known = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    g = proto.graph
    tensors = list(g.initializer) + [sp.values for sp in g.sparse_initializer]
    for t in tensors:
        if t.data_type not in known:
            raise UnsupportedModelError(f"initializer {t.name!r} has element type {t.data_type}, which ONNX "
                                        "does not define")
        if t.data_type in _UNSUPPORTED_DTYPES:
            raise UnsupportedModelError(
                f"initializer {t.name!r} is {_UNSUPPORTED_DTYPES[t.data_type]}, which atcpy cannot store; "
                "convert the model's weights to float32 or float16")
        if any(d < 0 for d in t.dims):
            raise UnsupportedModelError(f"initializer {t.name!r} has a negative dimension {list(t.dims)}")


def _callees(nodes, local: set[tuple[str, str]]) -> list[tuple[str, str] | None]:
    """For each node (and the nodes of its subgraphs), the local function it calls or None."""
    out: list[tuple[str, str] | None] = []
    stack = list(nodes)
    while stack:
        n = stack.pop()
        key = (n.domain, n.op_type)
        out.append(key if key in local else None)
        for a in n.attribute:
            if a.type in _SUBGRAPH_TYPES:
                for sg in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    stack.extend(sg.node)
    return out


def count_inlined_nodes(proto: onnx.ModelProto, budget: int = NODE_BUDGET) -> int:
    """The node count after inlining every model-local function, counted without expanding
    (memoized per function, iteratively); `UnsupportedModelError` on recursion or over `budget`."""
    funcs = {(f.domain, f.name): f for f in proto.functions}
    calls = {k: _callees(f.node, set(funcs)) for k, f in funcs.items()}
    size: dict[tuple[str, str], int] = {}
    for root in funcs:
        stack, on_path = [(root, False)], set()
        while stack:
            key, done = stack.pop()
            if done:
                on_path.discard(key)
                size[key] = min(sum(1 if c is None else size[c] for c in calls[key]), _COUNT_CAP)
                continue
            if key in size:
                continue
            on_path.add(key)
            stack.append((key, True))
            for c in set(calls[key]) - {None}:
                if c in on_path:
                    raise UnsupportedModelError(f"model-local function {c[0]}::{c[1]} calls itself (through "
                                                f"{key[0]}::{key[1]}); recursive functions cannot be inlined")
                if c not in size:
                    stack.append((c, False))
    total = sum(1 if c is None else size[c] for c in _callees(proto.graph.node, set(funcs)))
    if total > budget:
        count = f"{total}" if total < _COUNT_CAP else f"more than {_COUNT_CAP}"
        raise UnsupportedModelError(f"inlining the model's local functions would give {count} nodes; atcpy "
                                    f"inlines at most {budget}")
    return total


def check_loaded(proto: onnx.ModelProto) -> None:
    """Cheap checks on the parsed proto, before opset upgrade, inlining or reading weights."""
    _check_strings(proto)
    _check_versions(proto)
    _check_initializers(proto)
    if proto.functions:
        count_inlined_nodes(proto)


def _light_copy(light: onnx.ModelProto) -> onnx.ModelProto:
    """`light` with external initializers as typed inputs: their files are checked where
    they are mapped (`external_data.map_external`, relative to the model's directory)."""
    m = onnx.ModelProto()
    m.CopyFrom(light)
    g = m.graph
    external = [t for t in g.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        kept = [t for t in g.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
        del g.initializer[:]
        g.initializer.extend(kept)
        listed = {vi.name for vi in g.input}
        g.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in external if t.name not in listed)
    return m


def _checker_copy(m: onnx.ModelProto) -> onnx.ModelProto:
    """The checker wants a type and shape on every graph input/output and value_info;
    onnxruntime does not, so values the model leaves untyped or shapeless are checked
    without their declarations (the checker runs no inference: placeholders are inert)."""
    c = onnx.ModelProto()
    c.CopyFrom(m)
    g = c.graph
    keep = [vi for vi in g.value_info if vi.type.tensor_type.HasField("shape")]
    del g.value_info[:]
    g.value_info.extend(keep)
    for vi in list(g.output) + list(g.input):
        which = vi.type.WhichOneof("value")
        if which is None or (which == "tensor_type" and not vi.type.tensor_type.HasField("shape")):
            tt = vi.type.tensor_type
            tt.shape.dim.add()
            if not tt.HasField("elem_type"):
                tt.elem_type = onnx.TensorProto.FLOAT
    return c


def check_with_onnx(light: onnx.ModelProto) -> None:
    """onnx.checker on the weight-free copy, then (small graphs) strict shape inference
    without the model's own output/value declarations (exporters' declarations may
    disagree with ONNX's inference where onnxruntime does)."""
    light = _light_copy(light)
    try:
        onnx.checker.check_model(_checker_copy(light))
    except (onnx.checker.ValidationError, ValueError) as e:
        raise UnsupportedModelError(f"the model is not valid ONNX (onnx.checker): {_one_line(e)}") from None
    if len(light.graph.node) > FULL_CHECK_NODES:
        return
    m = onnx.ModelProto()
    m.CopyFrom(light)
    del m.graph.value_info[:]
    names = [o.name for o in m.graph.output]
    del m.graph.output[:]
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    try:
        onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    except Exception as e:  # noqa: BLE001  (InferenceError, ValidationError, RuntimeError)
        raise UnsupportedModelError(f"the model is not valid ONNX (shape inference): {_one_line(e)}") from None
