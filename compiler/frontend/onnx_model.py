"""Loading an ONNX model and running ONNX shape inference on a light copy of it.

Weights are never serialized for shape inference: `shape_model` builds a copy
of the graph in which every initializer (or ``Constant``) larger than
`SMALL_TENSOR` elements is replaced by a typed graph input, so inference and
the checker see types, not bytes.  Small tensors (shapes, axes, scales) stay,
so ``data_prop`` can still fold ``Shape -> Gather -> Concat -> Reshape`` chains.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx.inliner
from google.protobuf.message import DecodeError

from compiler.frontend.validate import check_loaded, check_with_onnx, dtype_name
from ir.errors import UnsupportedModelError, UsageError
from ir.symbolic import parse_dim
from ir.types import Dim, DType, TensorType

__all__ = [
    "DEFAULT_DOMAINS",
    "MIN_OPSET",
    "SMALL_TENSOR",
    "LoadedModel",
    "TypeProblem",
    "convert_type",
    "infer_value_types",
    "load_model",
    "shape_model",
    "symbol_of",
]

SMALL_TENSOR = 1024
DEFAULT_DOMAINS = ("", "ai.onnx")
MIN_OPSET = 9
_DIM_TEXT = 200  # longer dim_params become hashed symbols (the .om loader reads at most 256 characters)

log = logging.getLogger("atcpy.frontend")

ModelLike = onnx.ModelProto | str | bytes | os.PathLike


@dataclass
class LoadedModel:
    proto: onnx.ModelProto
    base_dir: str = ""
    opsets: dict[str, int] = field(default_factory=dict)

    @property
    def opset(self) -> int:
        return self.opsets[""]

    def domain_opset(self, domain: str) -> int:
        return self.opsets.get("" if domain in DEFAULT_DOMAINS else domain, 1)


def load_model(model: ModelLike) -> LoadedModel:
    """Parse `model` (proto, path or serialized bytes) without copying it when it is a proto."""
    base_dir = ""
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto = _parse(bytes(model), "the given bytes")
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise UsageError(f"model file {str(path)!r} does not exist")
        base_dir = str(path.parent)
        proto = _parse(path.read_bytes(), repr(str(path)))
    else:
        raise UsageError(f"cannot load an ONNX model from a {type(model).__name__}")
    if not proto.HasField("graph") or proto.ir_version <= 0 or not proto.graph.output:
        raise UnsupportedModelError("not an ONNX model: it has no graph, IR version or outputs")
    check_loaded(proto)
    opsets: dict[str, int] = {}
    for o in proto.opset_import:
        opsets["" if o.domain in DEFAULT_DOMAINS else o.domain] = int(o.version)
    if "" not in opsets:
        if proto.ir_version >= 3 and any(n.domain in DEFAULT_DOMAINS for n in proto.graph.node):
            raise UnsupportedModelError("the model imports no default-domain (ai.onnx) opset")
        # a graph of only ai.onnx.ml / training ops: no ai.onnx op reads this number
        opsets[""] = 1 if proto.ir_version < 3 else onnx.defs.onnx_opset_version()
    if opsets[""] < MIN_OPSET and any(n.domain in DEFAULT_DOMAINS for n in proto.graph.node):
        proto = _upgrade(proto, opsets[""])
        opsets[""] = MIN_OPSET
    if proto.functions:
        # model-local functions are plain subgraphs: inline them so every node is a schema op
        proto = onnx.inliner.inline_local_functions(proto)
    return LoadedModel(proto, base_dir, opsets)


def _upgrade(proto: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """Opsets below `MIN_OPSET` are brought up to it with ONNX's version converter (the
    ops that changed since, e.g. And/Or/Xor at 7 or Not at 1, keep their meaning)."""
    import onnx.version_converter

    try:
        return onnx.version_converter.convert_version(proto, MIN_OPSET)
    except Exception as e:  # noqa: BLE001  (the converter raises many kinds)
        raise UnsupportedModelError(
            f"the model uses ai.onnx opset {version}; atcpy supports opset {MIN_OPSET} and up, and "
            f"onnx.version_converter cannot upgrade it: {str(e).splitlines()[0] if str(e) else e}"
        ) from None


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise UnsupportedModelError(f"{what} is not a valid ONNX model (protobuf decode failed: {e})") from None
    return proto


def _numel(dims) -> int:
    return math.prod(int(d) for d in dims)


def _big_constant(node: onnx.NodeProto) -> onnx.TensorProto | None:
    if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS:
        return None
    for a in node.attribute:
        if a.name == "value" and _numel(a.t.dims) > SMALL_TENSOR:
            return a.t
    return None


def shape_model(lm: LoadedModel, input_shapes: dict[str, list[Dim]] | None) -> onnx.ModelProto:
    """A weight-free copy of the model for the checker and shape inference, with the
    user's input shape overrides applied."""
    src = lm.proto
    m = onnx.ModelProto()
    m.ir_version = max(src.ir_version, 4)  # >= 4: initializers need not be inputs
    m.opset_import.extend(src.opset_import)
    g, sg = m.graph, src.graph
    g.name = sg.name or "main"
    init_names = {t.name for t in sg.initializer}
    for vi in sg.input:
        if vi.name in init_names:
            continue
        new = g.input.add()
        new.CopyFrom(vi)
        if input_shapes and vi.name in input_shapes:
            _set_shape(new, input_shapes[vi.name])
    for t in sg.initializer:
        if _numel(t.dims) > SMALL_TENSOR:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    for n in sg.node:
        t = _big_constant(n)
        if t is not None:
            g.input.append(onnx.helper.make_tensor_value_info(n.output[0], t.data_type, list(t.dims)))
        else:
            g.node.append(n)
    g.output.extend(sg.output)
    g.value_info.extend(sg.value_info)
    g.sparse_initializer.extend(sg.sparse_initializer)
    m.functions.extend(src.functions)
    return m


def _set_shape(vi: onnx.ValueInfoProto, shape: list[Dim]) -> None:
    tt = vi.type.tensor_type
    tt.ClearField("shape")
    tt.shape.SetInParent()
    for d in shape:
        dim = tt.shape.dim.add()
        if isinstance(d, int) and d >= 0:
            dim.dim_value = d
        elif isinstance(d, str) and d != "?":
            dim.dim_param = d


def infer_value_types(m: onnx.ModelProto) -> tuple[dict[str, onnx.TypeProto], list[str]]:
    """Run the checker and strict shape inference (`check_with_onnx`: an invalid model is an
    `UnsupportedModelError`), then lenient shape inference with data propagation; returns every known value's
    TypeProto by name and the warnings."""
    warnings: list[str] = []
    check_with_onnx(m)
    inferred = m
    for kwargs in ({"data_prop": True}, {}):
        try:
            inferred = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False, **kwargs)
            break
        except Exception as e:  # noqa: BLE001  inference bugs must not sink a model the engines can run
            warnings.append(f"onnx shape inference ({kwargs or 'no data_prop'}): {str(e).splitlines()[0]}")
    types: dict[str, onnx.TypeProto] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.WhichOneof("value") is not None:
            prev = types.get(vi.name)
            if prev is None or _rank(vi.type) is not None:
                types[vi.name] = vi.type
    for t in g.initializer:
        types[t.name] = onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims))
    return types, warnings


def _rank(tp: onnx.TypeProto) -> int | None:
    if tp.WhichOneof("value") != "tensor_type" or not tp.tensor_type.HasField("shape"):
        return None
    return len(tp.tensor_type.shape.dim)


class TypeProblem(ValueError):
    """A value whose ONNX type the IR cannot represent (kind: 'sequence', 'rank', 'dtype' ...)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def symbol_of(dim_param: str) -> Dim:
    """The IR dim of an ONNX ``dim_param``: the text itself when it is a symbol or an
    expression (``"past_sequence_length + 1"``), else (``"??"``, ``"batch size"``, which
    ONNX allows) a symbol made of its word characters and a hash of it, so equal texts
    stay one symbol and the `.om` loader can parse every dim."""
    if len(dim_param) <= _DIM_TEXT and parse_dim(dim_param) is not None:
        return dim_param
    word = re.sub(r"[^A-Za-z0-9_]+", "_", dim_param).strip("_")[:40]
    name = f"dim_{word}_{hashlib.sha1(dim_param.encode()).hexdigest()[:8]}".replace("__", "_")
    log.info("dim_param %r is not a symbol atcpy can parse: it is called %r", dim_param[:60], name)
    return name


def convert_type(tp: onnx.TypeProto | None) -> TensorType | None:
    """The IR type of an ONNX type; None if ONNX knows nothing; `TypeProblem` if the
    value is not a ranked tensor of a supported element type."""
    if tp is None:
        return None
    which = tp.WhichOneof("value")
    if which is None:
        return None
    if which != "tensor_type":
        kind = {"sequence_type": "sequence", "map_type": "map", "optional_type": "optional",
                "sparse_tensor_type": "sparse tensor"}.get(which, which)
        raise TypeProblem(kind, f"{kind}-typed value")
    tt = tp.tensor_type
    if tt.elem_type == 0:
        return None
    try:
        dtype = DType.from_onnx(tt.elem_type)
    except TypeError:
        name = dtype_name(tt.elem_type)
        raise TypeProblem("dtype", f"element type {name} is not supported by atcpy's IR") from None
    if not tt.HasField("shape"):
        raise TypeProblem("rank", "tensor of unknown rank")
    dims: list[Dim] = []
    for d in tt.shape.dim:
        which_d = d.WhichOneof("value")
        if which_d == "dim_value" and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif which_d == "dim_param" and d.dim_param:
            dims.append(symbol_of(d.dim_param))
        else:
            dims.append("?")
    return TensorType(dtype, tuple(dims))
