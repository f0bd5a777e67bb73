"""An `.om` program as an ONNX graph, to look at in Netron (``atcpy --mode=1 --onnx=x.compiled.onnx``).

What atcpy *built*, not what it was given: one node per program step, in step order,
wired through the activation table, so the fused, quantized and KV-cache steps, the
engines and the memory plan can be inspected with an ordinary ONNX viewer::

    step {"kernel": "fused.conv", "engine": "cube", "name": "/conv1/Conv", "outputs": [1], ...}
      ==>
    node atcpy::fused.conv(input, conv1.weight_bn, c1_bias) -> r1
         {act="relu", engine="cube", arena_offset=[8192], arena_nbytes=[4096], estimate_ms=0.0024, ...}

Domains.  A step keeps its kernel name as ``op_type``.  A standard ONNX kernel stays in
the default domain when its attributes and operands make a node the ONNX checker accepts
for the program's opset (so Netron shows it with ONNX's documentation); every other step
(``fused.*``, ``quant.*``, ``kv.*``, ``sym.*``, or an ONNX kernel carrying atcpy-only
attributes such as Split's ``split`` at opset 18) goes to the ``atcpy`` domain, declared
in the opset imports, with all its attributes.

Annotations (engine, tile plan, arena offset and size of each result, the cost model's
estimated time, the original node names).  The ONNX checker rejects any attribute an
op's schema does not declare, so on default-domain nodes they cannot be attributes: they
go into ``NodeProto.metadata_props`` (keys ``atcpy.engine``, ``atcpy.arena_offset``, ...),
which Netron lists with the node, and a one-line ``doc_string``.  ``atcpy``-domain nodes
carry them as plain attributes too.  `annotations` reads them back from either.

Weights (``weights=``):

- ``"om"`` (the CLI's default): initializers whose data is *external data pointing into
  the .om file itself* (location relative to the .onnx, the weight's byte offset and
  length in the .om's 64-byte aligned data section).  Nothing is copied, the values stay
  real (Netron and ``onnx.load`` read them), and the .onnx stays a few kB even for an LLM.
  It needs the .om in the .onnx's directory or below (ONNX refuses locations outside
  it); otherwise the export falls back to ``"shape"``.
- ``"embed"``: the weights' bytes inside the .onnx (a full copy; protobuf caps it at 2 GB).
- ``"shape"``: each weight a graph input of its dtype and shape -- an initializer cannot be
  shape-only, and zero-filled placeholders would be a model that runs and answers wrong.

The model passes ``onnx.checker.check_model`` with ``full_check=True`` (shape inference
in strict mode; it skips the ``atcpy`` domain), checked by path so external data resolves.
The graph is not meant to run anywhere: ``atcpy``-domain ops have no implementation
outside atcpy.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from runtime.om import ALIGN, MAGIC, Executable

__all__ = ["ATCPY_DOMAIN", "WEIGHT_MODES", "annotations", "om_to_onnx", "om_weight_offsets"]

ATCPY_DOMAIN = "atcpy"
WEIGHT_MODES = ("om", "embed", "shape")
_CUSTOM_PREFIXES = ("fused.", "quant.", "kv.", "sym.")
# step attributes that are atcpy's bookkeeping, never ONNX attributes of the kernel (and any ``_name``)
_BOOKKEEPING = frozenset({"name", "engine", "reason", "cost_cycles", "offsets", "inplace", "tile", "tiles",
                          "origins", "opset", "precision"})
# the ONNX nodes a step computes (`passes._rewrite.origins`; ATC calls it _datadump_original_op_names)
_ORIGIN_KEYS = ("_origins", "origins", "_datadump_original_op_names")
_DTYPES = {"f64": TensorProto.DOUBLE, "f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16,
           "bf16": TensorProto.BFLOAT16, "i64": TensorProto.INT64, "i32": TensorProto.INT32,
           "i16": TensorProto.INT16, "i8": TensorProto.INT8, "u64": TensorProto.UINT64,
           "u32": TensorProto.UINT32, "u16": TensorProto.UINT16, "u8": TensorProto.UINT8,
           "bool": TensorProto.BOOL, "str": TensorProto.STRING}
_PREFIX = struct.Struct("<8sII3Q24x")  # runtime/om.py's 64-byte prefix (documented there)
_MIN_IR_VERSION = 10  # NodeProto.metadata_props


def om_weight_offsets(om_path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Weight name -> (byte offset in the .om file, nbytes), read from the file's prefix
    and weight index (the layout in `runtime.om`); strings, which live in the index, are
    left out.  Call it on a file `Executable.load` has already validated."""
    with open(om_path, "rb") as f:
        magic, _version, _r, hlen, ilen, _dlen = _PREFIX.unpack(f.read(_PREFIX.size))
        if magic != MAGIC:
            raise ValueError(f"{om_path}: not an atcpy .om file")
        istart = _PREFIX.size + hlen + (-hlen % ALIGN)
        dstart = istart + ilen + (-ilen % ALIGN)
        f.seek(istart)
        index = json.loads(f.read(ilen))
    return {name: (dstart + e["offset"], e["nbytes"]) for name, e in index.items() if e.get("dtype") != "str"}


@dataclass
class _Export:
    """The state of one export: value names, the weights used, the opset imports."""

    exe: Executable
    weights: str
    om_location: str | None = None
    om_offsets: dict[str, tuple[int, int]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # activation id -> value name
    used_weights: dict[str, None] = field(default_factory=dict)  # in first-use order
    custom: bool = False

    @property
    def program(self) -> dict[str, Any]:
        return self.exe.program

    @property
    def opset(self) -> int:
        return int(self.program.get("opset") or 17)


def om_to_onnx(exe: Executable, *, weights: str = "shape", om_path: str | os.PathLike | None = None,
               onnx_path: str | os.PathLike | None = None) -> tuple[onnx.ModelProto, str]:
    """The ONNX model of `exe`'s program and the weight mode used (see the module docstring).
    ``weights="om"`` needs `om_path` (the loaded file) and `onnx_path` (where the model will
    be written, for the relative location); it falls back to ``"shape"`` when the .om is
    not in the .onnx's directory tree."""
    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights={weights!r}: expected one of {WEIGHT_MODES}")
    ex = _Export(exe, weights)
    if weights == "om":
        ex.om_location = _om_location(om_path, onnx_path)
        if ex.om_location is None:
            ex.weights = "shape"
        else:
            ex.om_offsets = om_weight_offsets(om_path)  # type: ignore[arg-type]
    _name_values(ex)
    estimates = _estimates(exe)
    nodes = [_node(ex, i, step, estimates) for i, step in enumerate(exe.program["steps"])]
    _attach_kv_presents(ex, nodes)
    nodes += _output_aliases(ex)
    graph = _graph(ex, nodes)
    opsets = [helper.make_opsetid("", ex.opset)]
    if ex.custom:
        opsets.append(helper.make_opsetid(ATCPY_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="atcpy",
                              ir_version=max(_MIN_IR_VERSION, helper.find_min_ir_version_for(opsets, True)))
    model.doc_string = graph.doc_string
    helper.set_model_props(model, _model_props(ex))
    return model, ex.weights


def _om_location(om_path: str | os.PathLike | None, onnx_path: str | os.PathLike | None) -> str | None:
    """The .om's path relative to the .onnx's directory, or None when ONNX would refuse it
    (no paths given, or the .om lies outside that directory)."""
    if om_path is None or onnx_path is None:
        return None
    rel = os.path.relpath(Path(om_path).resolve(), Path(onnx_path).resolve().parent)
    if rel.startswith("..") or os.path.isabs(rel):
        return None
    return Path(rel).as_posix()


def _name_values(ex: _Export) -> None:
    """One unique value name per activation: graph inputs and outputs keep their names
    (ONNX identifies them by name); every other activation keeps its IR name, made unique."""
    prog = ex.program
    taken = {i["name"] for i in prog["inputs"]} | {o["name"] for o in prog["outputs"]} | set(ex.exe.weights)
    for inp in prog["inputs"]:
        ex.names[inp["act"]] = inp["name"]
    for out in prog["outputs"]:
        ref = out.get("ref")
        if ref and ref[0] == "a" and ref[1] not in ex.names:
            ex.names[ref[1]] = out["name"]
    for i, act in enumerate(prog["activations"]):
        if i in ex.names:
            continue
        base = str(act.get("name") or f"act{i}")
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}__{i}" + (f"_{k}" if k > 1 else "")
        taken.add(name)
        ex.names[i] = name


def _estimates(exe: Executable) -> list[float | None]:
    """The cost model's ms per step: the report's ``per_op_estimate`` is in step order (one
    per step); an older or edited report is matched by the first result's name instead."""
    steps = exe.program["steps"]
    est = (exe.report or {}).get("per_op_estimate") or []
    if len(est) == len(steps):
        return [float(e["ms"]) if isinstance(e, dict) and "ms" in e else None for e in est]
    by_name = {e.get("op"): e.get("ms") for e in est if isinstance(e, dict)}
    acts = exe.program["activations"]
    return [by_name.get(acts[s["outputs"][0]]["name"]) if s["outputs"] else None for s in steps]


def _ref_name(ex: _Export, ref: Any) -> str:
    if ref is None:
        return ""
    if ref[0] == "w":
        ex.used_weights.setdefault(ref[1], None)
        return str(ref[1])
    return ex.names[ref[1]]


def _step_annotations(ex: _Export, i: int, step: dict[str, Any], ms: float | None) -> dict[str, Any]:
    """atcpy's annotations of one step, by name (lists of ints for the per-result plan)."""
    attrs = step.get("attrs") or {}
    acts = ex.program["activations"]
    ann: dict[str, Any] = {
        "step": i, "engine": str(step.get("engine", "")), "name": str(step.get("name", "")),
        "arena_offset": [int(acts[o]["offset"]) for o in step["outputs"]],
        "arena_nbytes": [int(acts[o]["nbytes"]) for o in step["outputs"]],
    }
    if ms is not None:
        ann["estimate_ms"] = float(ms)
    origins = next((attrs[k] for k in _ORIGIN_KEYS if isinstance(attrs.get(k), list)), None)
    ann["origins"] = [str(o) for o in origins] if origins else [ann["name"]]
    if "tile" in attrs:
        ann["tile_plan"] = f"tile={attrs['tile']} tiles={attrs.get('tiles')}"
    for k in ("reason", "precision", "inplace"):
        if k in attrs:
            ann[k] = attrs[k]
    return ann


def annotations(node: onnx.NodeProto) -> dict[str, str]:
    """A node's atcpy annotations as strings, from its ``metadata_props`` (every node has them)."""
    return {p.key.removeprefix("atcpy."): p.value for p in node.metadata_props if p.key.startswith("atcpy.")}


def _node(ex: _Export, i: int, step: dict[str, Any], estimates: list[float | None]) -> onnx.NodeProto:
    """Step `i` as a node: an ONNX node if ONNX accepts it, else an ``atcpy`` one; annotated either way."""
    kernel = str(step["kernel"])
    inputs = [_ref_name(ex, r) for r in step["inputs"]]
    while inputs and inputs[-1] == "":
        inputs.pop()
    outputs = [ex.names[a] for a in step["outputs"]]
    ann = _step_annotations(ex, i, step, estimates[i] if i < len(estimates) else None)
    name = ann["name"] or f"step{i}"
    node = None
    if not kernel.startswith(_CUSTOM_PREFIXES):
        node = _default_node(ex, kernel, inputs, outputs, name, step.get("attrs") or {})
    if node is None:
        ex.custom = True
        node = helper.make_node(kernel, inputs, outputs, name=name, domain=ATCPY_DOMAIN)
        plain = {k: v for k, v in (step.get("attrs") or {}).items() if k not in ann and k not in _ORIGIN_KEYS}
        for k, v in {**plain, **ann}.items():
            attr = _free_attribute(k, v)
            if attr is not None:
                node.attribute.append(attr)
    for k, v in ann.items():
        node.metadata_props.add(key=f"atcpy.{k}", value=_text(v))
    slots = [f"{o}+{n}" if o >= 0 else "outside the arena"
             for o, n in zip(ann["arena_offset"], ann["arena_nbytes"], strict=True)]
    node.doc_string = (f"step {i}: {kernel} on {ann['engine']}, arena {', '.join(slots) or '-'}"
                       + (f", est. {ann['estimate_ms']:.4g} ms" if "estimate_ms" in ann else ""))
    return node


def _text(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(_text(x) for x in v)
    return v if isinstance(v, str) else json.dumps(v)


def _default_node(ex: _Export, kernel: str, inputs: list[str], outputs: list[str], name: str,
                  attrs: dict[str, Any]) -> onnx.NodeProto | None:
    """The step as a default-domain node, or None when ONNX's schema for the opset does not
    accept it (unknown op, an attribute ONNX does not declare, operand counts)."""
    try:
        schema = onnx.defs.get_schema(kernel, ex.opset, "")
    except onnx.defs.SchemaError:
        return None
    node = helper.make_node(kernel, inputs, outputs, name=name)
    for k, v in attrs.items():
        if k in _BOOKKEEPING or k.startswith("_"):
            continue
        if k not in schema.attributes:
            return None
        attr = _typed_attribute(ex, k, v, schema.attributes[k].type)
        if attr is None:
            return None
        node.attribute.append(attr)
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = onnx.IR_VERSION
    ctx.opset_imports = {"": ex.opset}
    try:
        onnx.checker.check_node(node, ctx)
    except onnx.checker.ValidationError:
        return None
    return node


def _typed_attribute(ex: _Export, key: str, v: Any, kind: int) -> AttributeProto | None:
    """`v` as the attribute type ONNX's schema wants, or None when it is not one."""
    A = AttributeProto
    try:
        if kind == A.TENSOR and isinstance(v, dict) and "$weight" in v:
            return helper.make_attribute(key, numpy_helper.from_array(np.asarray(ex.exe.weights[v["$weight"]])))
        if isinstance(v, (dict, type(None))):
            return None
        conv = {A.FLOAT: float, A.INT: int, A.STRING: str}.get(kind)
        if conv is not None and not isinstance(v, list):
            return helper.make_attribute(key, conv(v), attr_type=kind)
        conv = {A.FLOATS: float, A.INTS: int, A.STRINGS: str}.get(kind)
        if conv is not None and isinstance(v, list):
            return helper.make_attribute(key, [conv(x) for x in v], attr_type=kind)
    except (TypeError, ValueError, KeyError):
        return None
    return None


def _free_attribute(key: str, v: Any) -> AttributeProto | None:
    """An attribute of an ``atcpy``-domain node: ints, floats, strings and their lists as
    themselves; weight references as ``"$weight:<name>"``; anything else as JSON text."""
    if v is None:
        return None
    if isinstance(v, dict) and set(v) == {"$weight"}:
        return helper.make_attribute(key, f"$weight:{v['$weight']}")
    if isinstance(v, bool):
        return helper.make_attribute(key, int(v))
    if isinstance(v, (int, float, str)):
        return helper.make_attribute(key, v)
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        if all(isinstance(x, int) for x in v):
            return helper.make_attribute(key, v, attr_type=AttributeProto.INTS)
        return helper.make_attribute(key, [float(x) for x in v], attr_type=AttributeProto.FLOATS)
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return helper.make_attribute(key, v, attr_type=AttributeProto.STRINGS)
    return helper.make_attribute(key, json.dumps(v, sort_keys=True))


def _attach_kv_presents(ex: _Export, nodes: list[onnx.NodeProto]) -> None:
    """A compressed KV cache's float ``present`` is no step's result (the Session reads it
    back from the stored cache when asked); it is ``kv.append``'s result 0, so show it there."""
    steps = ex.program["steps"]
    for entry in ex.program.get("kv_cache") or []:
        if "present_act" not in entry:
            continue
        for node, step in zip(nodes, steps, strict=True):
            if entry["act"] in step["outputs"]:
                node.output.insert(0, ex.names[entry["present_act"]])
                break


def _output_aliases(ex: _Export) -> list[onnx.NodeProto]:
    """An Identity for each graph output that is not a step's result under its own name (an
    input or a weight passed through, or a value that two outputs name): ONNX names outputs
    by the value.  These are the only nodes that are not steps; their metadata says so."""
    aliases = []
    for out in ex.program["outputs"]:
        src = _ref_name(ex, out.get("ref"))
        if src != out["name"]:
            node = helper.make_node("Identity", [src], [out["name"]], name=f"output {out['name']}")
            node.metadata_props.add(key="atcpy.step", value="none")
            node.doc_string = "not a program step: the graph output names this value"
            aliases.append(node)
    return aliases


def _value_info(name: str, dtype: str, shape: list[Any]) -> onnx.ValueInfoProto:
    dims = [d if isinstance(d, int) and d >= 0 else str(d) for d in shape]
    return helper.make_tensor_value_info(name, _DTYPES.get(dtype, TensorProto.UNDEFINED), dims)


def _graph(ex: _Export, nodes: list[onnx.NodeProto]) -> onnx.GraphProto:
    prog = ex.program
    inputs = [_value_info(i["name"], i["dtype"], i["shape"]) for i in prog["inputs"]]
    outputs = [_value_info(o["name"], o["dtype"], o["shape"]) for o in prog["outputs"]]
    io = {v.name for v in inputs} | {v.name for v in outputs}
    produced = {o for n in nodes for o in n.output}
    acts = prog["activations"]
    value_info = [_value_info(ex.names[i], a["dtype"], a["shape"]) for i, a in enumerate(acts)
                  if ex.names[i] in produced and ex.names[i] not in io]
    initializers, weight_inputs = _weights(ex)
    graph = helper.make_graph(nodes, str(ex.exe.header.get("model") or "atcpy"), inputs + weight_inputs, outputs,
                              initializer=initializers, value_info=value_info)
    graph.doc_string = _graph_doc(ex)
    return graph


def _weights(ex: _Export) -> tuple[list[TensorProto], list[onnx.ValueInfoProto]]:
    """The weights the steps read, as initializers (``om``: external data in the .om;
    ``embed``) or, for ``shape``, as graph inputs typed like them."""
    inits: list[TensorProto] = []
    typed: list[onnx.ValueInfoProto] = []
    for name in ex.used_weights:
        arr = np.asarray(ex.exe.weights[name])
        if ex.weights == "shape":
            vi = helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype)
                                               if arr.dtype != object else TensorProto.STRING, list(arr.shape))
            vi.doc_string = "a weight of the .om (shape and dtype only; --onnx_weights=embed writes its values)"
            typed.append(vi)
            continue
        where = ex.om_offsets.get(name) if ex.weights == "om" else None
        if where is not None and where[1] == arr.nbytes and arr.dtype != object:
            t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(arr.dtype), dims=list(arr.shape))
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", ex.om_location), ("offset", str(where[0])), ("length", str(where[1]))):
                t.external_data.add(key=k, value=v)
            inits.append(t)
        else:
            inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    return inits, typed


def _graph_doc(ex: _Export) -> str:
    h = ex.exe.header
    mem = ex.program.get("memory") or h.get("memory") or {}
    how = {"om": f"initializers read from {ex.om_location} (external data)", "embed": "embedded initializers",
           "shape": "graph inputs (shape and dtype only)"}[ex.weights]
    return (f"atcpy program of {h.get('model')} for {h.get('soc_version')}: {len(ex.program['steps'])} steps, "
            f"one node each (custom steps in the '{ATCPY_DOMAIN}' domain; engine, arena slots and estimates in "
            f"each node's metadata); arena {mem.get('arena_bytes', '?')} bytes; weights as {how}. "
            "For viewing: this graph does not run outside atcpy.")


def _model_props(ex: _Export) -> dict[str, str]:
    h, rep = ex.exe.header, ex.exe.report or {}
    props = {"atcpy.model": str(h.get("model")), "atcpy.soc_version": str(h.get("soc_version")),
             "atcpy.steps": str(len(ex.program["steps"])), "atcpy.weights": ex.weights,
             "atcpy.arena_bytes": str((ex.program.get("memory") or h.get("memory") or {}).get("arena_bytes"))}
    if "estimated_latency_ms" in rep:
        props["atcpy.estimated_latency_ms"] = str(rep["estimated_latency_ms"])
    if rep.get("precision_mode"):
        props["atcpy.precision_mode"] = str(rep["precision_mode"])
    if ex.program.get("dims"):
        props["atcpy.dims"] = json.dumps(ex.program["dims"], sort_keys=True)
    return props
