"""Model validation before import: what onnxruntime would reject, atcpy rejects too
(exit 3, `UnsupportedModelError`), before any weight is read or function inlined.

    check_loaded(proto)            # strings, IR/opset versions, initializer dtypes, function budget
    check_with_onnx(light_model)   # onnx.checker + strict shape inference on the weight-free copy

The function budget counts the nodes inlining would produce (model-local functions
calling each other) without expanding anything: a 1.6 KB file of 24 nested functions,
each calling the next twice, would inline to 2**24 nodes.
"""

from __future__ import annotations

import math

import onnx
import onnx.checker
import onnx.defs
import onnx.shape_inference

from ir.errors import UnsupportedModelError

__all__ = ["FULL_CHECK_NODES", "NODE_BUDGET", "check_declared_types", "check_loaded", "check_tensor_size",
           "check_with_onnx", "count_inlined_nodes", "type_text"]

# Nodes a model with local functions may have once they are inlined (a 7B LLM exported
# by torch.onnx.export has ~10k; large vision models ~100k).
NODE_BUDGET = 1 << 18
_COUNT_CAP = 1 << 62  # counts stop growing here (a chain of doubling functions is 2**depth)
# Strict shape inference (onnx.checker's full_check) runs on graphs up to this many nodes.
FULL_CHECK_NODES = 20_000
_SUBGRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_UNSUPPORTED_DTYPES = {onnx.TensorProto.BFLOAT16: "bfloat16"}
_TYPE_NAMES = set(onnx.TensorProto.DataType.values())
_SUB_BYTE = {"INT4": 4, "UINT4": 4, "FLOAT4": 4, "INT2": 2, "UINT2": 2, "FLOAT6": 6}
_COMPLEX = (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
_DATA_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


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
        check_tensor_size(t, f"initializer {t.name!r}")
    for n in _all_nodes(g):
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                check_tensor_size(a.t, f"node {n.name!r} ({n.op_type}): attribute {a.name!r}")


def _all_nodes(g: onnx.GraphProto):
    """The nodes of `g` and of its subgraphs (If/Loop/Scan bodies), depth first."""
    stack = list(g.node)
    while stack:
        n = stack.pop()
        yield n
        for a in n.attribute:
            if a.type in _SUBGRAPH_TYPES:
                for sg in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    stack.extend(sg.node)


def _bits(elem_type: int) -> int | None:
    """Bits an element takes in ``raw_data`` (None: not a fixed-size type, e.g. STRING)."""
    name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in _TYPE_NAMES else ""
    for prefix, bits in _SUB_BYTE.items():
        if name.startswith(prefix):
            return bits
    try:
        np_type = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    except (KeyError, ValueError, TypeError):
        return None
    return None if np_type == object else 8 * np_type.itemsize


def check_tensor_size(t: onnx.TensorProto, what: str) -> None:
    """The element count `t.dims` declares must match the data the tensor holds, checked
    before anything reads it: a 1 KB file may declare ``dims [2147483648]`` (onnxruntime
    refuses it; ONNX's data propagation would walk all 2**31 elements).  External data is
    checked where it is mapped (`external_data.map_external`)."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return
    numel = math.prod(int(d) for d in t.dims)
    bits = _bits(t.data_type)
    if t.HasField("raw_data"):
        if bits is not None and len(t.raw_data) * 8 != _round_up(numel * bits, 8):
            raise UnsupportedModelError(f"{what} declares dims {list(t.dims)} ({numel} elements of "
                                        f"{dtype_name(t.data_type)}) but holds {len(t.raw_data)} bytes")
        return
    held = sum(len(getattr(t, f)) for f in _DATA_FIELDS)
    if t.data_type == onnx.TensorProto.STRING or bits is None:
        expected = numel if t.data_type == onnx.TensorProto.STRING else None
    elif bits < 8:
        expected = _round_up(numel * bits, 8) // 8  # sub-byte types: one packed byte per int32_data entry
    else:
        expected = numel * (2 if t.data_type in _COMPLEX else 1)
    if (expected is not None and held != expected) or (expected is None and numel and not held):
        raise UnsupportedModelError(f"{what} declares dims {list(t.dims)} ({numel} elements of "
                                    f"{dtype_name(t.data_type)}) but holds {held} values")


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


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
        inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    except Exception as e:  # noqa: BLE001  (InferenceError, ValidationError, RuntimeError)
        raise UnsupportedModelError(f"the model is not valid ONNX (shape inference): {_one_line(e)}") from None
    check_declared_types(light.graph, inferred.graph)


def type_text(tp: onnx.TypeProto) -> str | None:
    """A type without its shape, spelled as onnxruntime does (``tensor(float)``,
    ``seq(tensor(int64))``); None where an element type is unknown (nothing to compare)."""
    which = tp.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        elem = getattr(tp, which).elem_type
        if not elem:
            return None
        name = dtype_name(elem).lower()
        return f"tensor({name})" if which == "tensor_type" else f"sparse_tensor({name})"
    if which in ("sequence_type", "optional_type"):
        inner = type_text(getattr(tp, which).elem_type)
        return None if inner is None else f"{'seq' if which == 'sequence_type' else 'optional'}({inner})"
    if which == "map_type":
        inner = type_text(tp.map_type.value_type)
        return None if inner is None else f"map({dtype_name(tp.map_type.key_type).lower()},{inner})"
    return None


def check_declared_types(graph: onnx.GraphProto, inferred: onnx.GraphProto) -> None:
    """onnxruntime refuses a model whose graph output or value_info declares another
    element type (or kind of type) than the node producing the value gives, and a tensor
    type without an element type; a disagreeing *shape* it merges with a warning, so
    shapes are not compared.  `inferred` is strict inference without the declarations."""
    producer = {o: n for n in graph.node for o in n.output if o}
    got = {vi.name: vi.type for vi in list(inferred.value_info) + list(inferred.output)}
    for what, vis in (("graph input", graph.input), ("graph output", graph.output), ("value_info", graph.value_info)):
        for vi in vis:
            which = vi.type.WhichOneof("value")
            if which == "tensor_type" and not vi.type.tensor_type.elem_type:
                raise UnsupportedModelError(f"{what} {vi.name!r} declares a tensor type without an element type "
                                            "(UNDEFINED); ONNX requires one")
            node = producer.get(vi.name)
            if which is None or node is None or vi.name not in got:
                continue
            declared, produced = type_text(vi.type), type_text(got[vi.name])
            if declared is not None and produced is not None and declared != produced:
                raise UnsupportedModelError(
                    f"{what} {vi.name!r} is declared {declared}, but node {node.name!r} ({node.op_type}) "
                    f"produces {produced}")
