"""ONNX graph -> IR graph.

    graph torch_jit(input: [N, 8] f32) { Gemm(input, fc.weight, fc.bias) -> out }
      ->
    graph @torch_jit(%input: tensor<Nx8xf32>) -> (tensor<Nx4xf32>) attributes {opset = 17} {
      %fc.weight = const() {value = dense_resource<"fc.weight"> : tensor<4x8xf32>} : () -> tensor<4x8xf32>
      %fc.bias = const() {value = dense<[...]> : tensor<4xf32>} : () -> tensor<4xf32>
      %out = Gemm(%input, %fc.weight, %fc.bias) {alpha = 1.0, ..., name = "/fc/Gemm", transB = 1} : ...
      return %out
    }

Initializers (also those listed as graph inputs, as old-opset models do) and
``Constant`` nodes become ``const`` ops, created where first used so unused
weights are never read.  Declared ops get their result types from the registry
and are checked against ONNX shape inference; opaque ops take ONNX's types and
carry ``opset``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.frontend.external_data import map_external
from compiler.frontend.normalize import NodeBuild, normalize
from compiler.frontend.onnx_model import DEFAULT_DOMAINS, LoadedModel, TypeProblem, convert_type
from compiler.frontend.support import kind_of
from ir.core import Graph, Op, Value
from ir.errors import AtcError, InternalError, UnsupportedModelError
from ir.ops.shape import fold_symbolically, shape_value_op
from ir.registry import TypeInferenceError, foldable, infer_types, lookup
from ir.types import DType, TensorType

__all__ = ["Importer", "convert_attribute", "tensor_to_array"]

log = logging.getLogger("atcpy.frontend")

# Result placeholder for declared ops whose ONNX type is unknown: if inference hands it
# back (a `trusted` result), the type is truly unknown.
_UNKNOWN = TensorType(DType.f32, ("<unknown>",))
# Import-time folding (of what `ir.registry.foldable` allows): results up to this many elements.
_FOLD_LIMIT = 4096


def tensor_to_array(t: onnx.TensorProto, base_dir: str = "") -> np.ndarray:
    """One copy at most: numpy_helper reads raw_data with frombuffer (read-only result);
    external data is mapped, not read (`map_external`)."""
    mapped = map_external(t, base_dir)
    if mapped is not None:
        return mapped
    try:
        return numpy_helper.to_array(t, base_dir)
    except Exception as e:  # noqa: BLE001  (any decode failure is a bad model)
        raise UnsupportedModelError(f"tensor {t.name!r} cannot be read: {e}") from None


def sparse_to_array(sp: onnx.SparseTensorProto, base_dir: str = "") -> np.ndarray:
    values = tensor_to_array(sp.values, base_dir)
    idx = tensor_to_array(sp.indices, base_dir).astype(np.int64)
    dims = tuple(int(d) for d in sp.dims)
    try:
        if any(d < 0 for d in dims) or (idx.size and idx.min() < 0):
            raise ValueError(f"negative dims {list(dims)} or indices")
        dense = np.zeros(dims, values.dtype)
        if idx.ndim == 1:
            dense.reshape(-1)[idx] = values
        else:
            dense[tuple(idx.T)] = values
    except (ValueError, IndexError, MemoryError) as e:
        raise UnsupportedModelError(f"sparse tensor {sp.values.name!r} {list(dims)} cannot be read: {e}") from None
    return dense


def convert_attribute(a: onnx.AttributeProto, base_dir: str = "") -> Any:
    A = onnx.AttributeProto
    if a.type == A.INT:
        return int(a.i)
    if a.type == A.FLOAT:
        return float(a.f)
    if a.type == A.STRING:
        return a.s.decode("utf-8", "replace")
    if a.type == A.INTS:
        return [int(x) for x in a.ints]
    if a.type == A.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == A.STRINGS:
        return [s.decode("utf-8", "replace") for s in a.strings]
    if a.type == A.TENSOR:
        return tensor_to_array(a.t, base_dir)
    if a.type == A.TENSORS:
        return [tensor_to_array(t, base_dir) for t in a.tensors]
    if a.type == A.SPARSE_TENSOR:
        return sparse_to_array(a.sparse_tensor, base_dir)
    raise UnsupportedModelError(f"attribute {a.name!r} has type {A.AttributeType.Name(a.type)}, "
                                "which atcpy cannot represent")


def _agrees(ours: TensorType, theirs: TensorType) -> bool:
    if ours.dtype != theirs.dtype or ours.rank != theirs.rank:
        return False
    return all(not (isinstance(a, int) and isinstance(b, int)) or a == b for a, b in zip(ours.shape, theirs.shape))


def _onnx_known_wrong(op: Op) -> bool:
    """Cases where ONNX shape inference is known to differ from the ONNX reference
    implementation and onnxruntime (which the declarations follow): pools with
    ceil_mode drop a last window that would start in the right padding."""
    return op.kind in ("MaxPool", "AveragePool", "LpPool") and bool(op.attrs.get("ceil_mode"))


class Importer:
    """Builds the IR graph node by node; see `import_onnx` for the contract."""

    def __init__(self, lm: LoadedModel, types: dict[str, onnx.TypeProto], *, strict: bool = False,
                 diagnostics: list[str] | None = None) -> None:
        self.lm = lm
        self.types = types
        self.strict = strict
        self.diagnostics = diagnostics if diagnostics is not None else []
        g = lm.proto.graph
        self.graph = Graph(g.name or "main")
        self.env: dict[str, Value] = {}
        self.inits: dict[str, onnx.TensorProto] = {t.name: t for t in g.initializer}
        self.sparse_inits = {sp.values.name: sp for sp in g.sparse_initializer}
        self.onnx_names: set[str] = set(self.inits) | set(self.sparse_inits) | {vi.name for vi in g.input}
        for n in g.node:
            self.onnx_names.update(o for o in n.output if o)
        self.problems: list[str] = []

    # -- names and helpers ---------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A name no ONNX tensor uses and the graph has not handed out."""
        taken = self.graph._names
        name, i = hint, 0
        while name in self.onnx_names or name in taken:
            name, i = f"{hint}_{i}", i + 1
        self.onnx_names.add(name)  # two fresh names asked for before either is used differ
        return name

    def helper_const(self, array: np.ndarray, hint: str) -> Value:
        t = TensorType(DType.from_numpy(array.dtype), array.shape)
        return self.graph.insert(Op("const", [], [t], {"value": array}, [self.fresh(hint)])).result

    def const_value(self, v: Value) -> np.ndarray | None:
        return v.producer.attrs["value"] if v.producer is not None and v.producer.kind == "const" else None

    def onnx_type(self, name: str) -> TensorType | None:
        try:
            return convert_type(self.types.get(name))
        except TypeProblem:
            return None

    def value_of(self, name: str, user: str) -> Value:
        v = self.env.get(name)
        if v is not None:
            return v
        if name in self.inits:
            arr = tensor_to_array(self.inits[name], self.lm.base_dir)
        elif name in self.sparse_inits:
            arr = sparse_to_array(self.sparse_inits[name], self.lm.base_dir)
        else:
            raise UnsupportedModelError(f"{user} uses tensor {name!r}, which nothing defines before it")
        t = TensorType(DType.from_numpy(arr.dtype), arr.shape)
        v = self.graph.insert(Op("const", [], [t], {"value": arr}, [name])).result
        self.env[name] = v
        return v

    def emit(self, kind: str, operands: list[Value | None], attrs: dict[str, Any], names: list[str], *,
             result_types: list[TensorType] | None = None, hints: list[TensorType | None] | None = None,
             where: str = "") -> Op:
        """Add a declared op with result types from the registry.  `result_types` are taken
        as they are; `hints` (ONNX's types) are what inference keeps for ops whose result
        shape depends on runtime values."""
        opdef = lookup(kind)
        full = opdef.with_defaults(attrs) if opdef else dict(attrs)
        if result_types is not None:
            return self.graph.insert(Op(kind, operands, result_types, full, names))
        placeholders = [h or _UNKNOWN for h in (hints or [None] * len(names))]
        op = Op(kind, operands, placeholders, full, names)  # results exist so inference sees their count
        try:
            inferred = infer_types(op)
        except TypeInferenceError as e:
            op.drop_operands()
            msg = f"{where or kind}: type inference failed: {e}"
            if self.strict:
                raise InternalError(msg) from None
            raise UnsupportedModelError(msg) from None
        if len(inferred) != len(names):
            op.drop_operands()
            msg = f"{where or kind}: the op has {len(inferred)} results, the node {len(names)}"
            raise (InternalError if self.strict else UnsupportedModelError)(msg)
        for r, t in zip(op.results, inferred):
            r.type = t
        return self.graph.insert(op)

    # -- the graph ------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.lm.proto.graph
        for vi in g.input:
            if vi.name in self.inits or vi.name in self.sparse_inits:
                continue  # an initializer listed as input (IR < 4 models): a constant
            t = convert_type(self.types.get(vi.name, vi.type))
            assert t is not None  # find_problems rejected untyped inputs
            self.env[vi.name] = self.graph.add_input(vi.name, t)
        for node in g.node:
            self.guarded_node(node)
        for vi in g.output:
            v = self.value_of(vi.name, f"graph output {vi.name!r}")
            self.graph.outputs.append(v)
            try:
                declared = convert_type(vi.type)  # what the model file says, not inference
            except TypeProblem:
                declared = None
            if declared is not None and not _agrees(v.type, declared):
                self.mismatch(f"graph output {vi.name!r}: IR type {v.type}, the model declares {declared}")
        if self.problems:
            raise UnsupportedModelError("\n  ".join(["the model cannot be imported:", *self.problems]))
        self.graph.attrs["opset"] = self.lm.opset
        return self.graph

    def mismatch(self, msg: str) -> None:
        if self.strict:
            raise InternalError(f"type inference disagrees with ONNX: {msg}")
        log.warning("type inference disagrees with ONNX: %s", msg)
        self.diagnostics.append(msg)

    def where(self, node: onnx.NodeProto) -> str:
        name = repr(node.name) if node.name else "(unnamed)"
        return f"{kind_of(node)} (node {name}, opset {self.lm.domain_opset(node.domain)})"

    def guarded_node(self, node: onnx.NodeProto) -> None:
        """`node`, with any failure on a model the checker passed reported as a model problem
        naming the node (strict mode, for tests, keeps the raw exception)."""
        try:
            self.node(node)
        except AtcError:
            raise
        except Exception as e:  # hostile models must end in exit 3, not a traceback
            if self.strict:
                raise
            log.debug("importing %s failed", self.where(node), exc_info=True)
            raise UnsupportedModelError(f"{self.where(node)}: cannot be imported: {type(e).__name__}: {e}") from None

    def node(self, node: onnx.NodeProto) -> None:
        kind = kind_of(node)
        where = self.where(node)
        if kind == "Constant":
            self.constant(node)
            return
        operands: list[Value | None] = [self.value_of(n, where) if n else None for n in node.input]
        while operands and operands[-1] is None:
            operands.pop()
        attrs = {a.name: convert_attribute(a, self.lm.base_dir) for a in node.attribute}
        outputs = list(node.output)
        while outputs and not outputs[-1]:
            outputs.pop()
        names = [o or self.fresh(f"{node.name or kind}_unused") for o in outputs]
        opdef = lookup(kind)
        if opdef is not None and self.fold_at_import(kind, operands, attrs, outputs):
            return
        if opdef is not None:
            vals = fold_shape_program(self.graph, self.declared_op(node, kind, operands, attrs, outputs, names))
        else:
            vals = self.opaque_op(node, kind, operands, attrs, outputs, names)
        for o, v in zip(outputs, vals):
            if o:
                self.env[o] = v

    def declared_op(self, node: onnx.NodeProto, kind: str, operands: list[Value | None], attrs: dict[str, Any],
                    outputs: list[str], names: list[str]) -> list[Value]:
        """The values of a node of a declared op: normalized to its IR form, typed by the
        declaration and checked against ONNX's types."""
        where = self.where(node)
        opdef = lookup(kind)
        nb = NodeBuild(self, node, kind, self.lm.domain_opset(node.domain), operands, attrs, outputs)
        vals = normalize(nb)
        if vals is not None:
            return vals
        for k in [k for k in nb.attrs if k not in opdef.attrs]:
            # only deprecated attributes reach here (every current one is declared)
            log.info("%s: dropping attribute %r unknown to the IR declaration", where, k)
            del nb.attrs[k]
        if node.name:
            nb.attrs["name"] = node.name
        hints = [self.onnx_type(o) if o else None for o in outputs]
        op = self.emit(kind, nb.operands, nb.attrs, names, hints=hints, where=where)
        for r, o in zip(op.results, outputs):
            theirs = self.onnx_type(o) if o else None
            if r.type == _UNKNOWN:
                r.type = self.node_level_type(node, operands, o) or _UNKNOWN
                if r.type == _UNKNOWN:
                    self.problems.append(f"{where}: the type of {o!r} is unknown")
            elif theirs is not None and not _agrees(r.type, theirs) and not _onnx_known_wrong(op):
                self.mismatch(f"{where}: {o!r} is {r.type} by the IR declaration, {theirs} by ONNX")
        return op.results

    def opaque_op(self, node: onnx.NodeProto, kind: str, operands: list[Value | None], attrs: dict[str, Any],
                  outputs: list[str], names: list[str]) -> list[Value]:
        """The values of a valid ONNX op the IR does not declare: kept as it is (it runs
        on the AICPU), typed by ONNX shape inference."""
        where = self.where(node)
        attrs["opset"] = self.lm.domain_opset(node.domain)
        if node.name:
            attrs["name"] = node.name
        rtypes = []
        named = node
        if len(names) != sum(1 for o in outputs if o):
            # absent optional outputs before a present one (LSTM's Y_h without Y): ONNX
            # types them only under a name, so infer this node with our fresh names
            named = onnx.NodeProto()
            named.CopyFrom(node)
            del named.output[:]
            named.output.extend(names)
        for o in names:
            t = self.onnx_type(o) if o in outputs else None
            if t is None:
                t = self.node_level_type(named, operands, o)
            if t is None and o not in outputs:
                # an absent optional output nobody reads: its value is dropped at run time
                t = TensorType(DType.f32, ("?",))
            if t is None:
                self.problems.append(f"{where}: ONNX shape inference gives no type (or no rank) for {o!r}")
                t = _UNKNOWN
            rtypes.append(t)
        return self.graph.insert(Op(kind, operands, rtypes, attrs, names)).results

    def fold_at_import(self, kind: str, operands: list[Value | None], attrs: dict[str, Any],
                       outputs: list[str]) -> bool:
        """Evaluate a node whose operands are all small constants (or a Shape of a static
        tensor) now, so exporters' shape arithmetic (Shape→Slice→Concat→Reshape) gives
        later ops constant operands and static types.  Large results are left to
        canonicalize, so weights are not materialized twice."""
        if not outputs or not all(outputs):
            return False
        if kind == "Shape":
            v = operands[0]
            if v is None or not v.type.is_static:
                return False
            dims = np.array(v.type.shape, np.int64)
            results = [dims[slice(attrs.get("start", 0), attrs.get("end"))]]
        else:
            consts = [None if v is None else v.producer for v in operands]
            if not operands or any(o is not None and (o.kind != "const" or o.attrs["value"].size > _FOLD_LIMIT)
                                   for o in consts if o is not None) or all(o is None for o in consts):
                return False
            from runtime.kernels.aicpu import evaluate_op

            probe = Op(kind, operands, [TensorType(DType.f32, ())] * len(outputs), dict(attrs), None)
            try:
                if not foldable(probe):
                    return False
                results = evaluate_op(probe, [None if o is None else o.attrs["value"] for o in consts],
                                      opset=self.lm.opset)
            except Exception:  # noqa: BLE001  leave it to the normal path, which reports real problems
                return False
            finally:
                probe.drop_operands()
            if len(results) != len(outputs) or any(np.asarray(r).size > _FOLD_LIMIT for r in results):
                return False
        for name, arr in zip(outputs, results):
            arr = np.asarray(arr)
            t = TensorType(DType.from_numpy(arr.dtype), arr.shape)
            self.env[name] = self.graph.insert(Op("const", [], [t], {"value": arr}, [name])).result
        return True

    def constant(self, node: onnx.NodeProto) -> None:
        a = node.attribute[0] if node.attribute else None
        if a is None:
            raise UnsupportedModelError(f"{self.where(node)} has no value")
        if a.name == "value":
            arr = tensor_to_array(a.t, self.lm.base_dir)
        elif a.name == "sparse_value":
            arr = sparse_to_array(a.sparse_tensor, self.lm.base_dir)
        else:
            val = convert_attribute(a)
            dtype = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
                     "value_ints": np.int64, "value_string": object, "value_strings": object}.get(a.name)
            if dtype is None:
                raise UnsupportedModelError(f"{self.where(node)}: unknown value attribute {a.name!r}")
            arr = np.asarray(val, dtype=dtype)
        t = TensorType(DType.from_numpy(arr.dtype), arr.shape)
        attrs: dict[str, Any] = {"value": arr}
        if node.name:
            attrs["name"] = node.name
        self.env[node.output[0]] = self.graph.insert(Op("const", [], [t], attrs, [node.output[0]])).result

    def node_level_type(self, node: onnx.NodeProto, operands: list[Value | None], output: str) -> TensorType | None:
        """Run ONNX shape inference on this node alone, with the IR's operand types and the
        values of small constant operands."""
        from compiler.frontend.onnx_model import SMALL_TENSOR

        g = onnx.GraphProto(name="node")
        seen: set[str] = set()
        for name, v in zip(node.input, operands):
            if not name or v is None or name in seen:
                continue
            seen.add(name)
            c = self.const_value(v)
            if c is not None and c.size <= SMALL_TENSOR and c.dtype != object:
                g.initializer.append(numpy_helper.from_array(np.asarray(c), name))
            else:
                dims = [d if isinstance(d, int) else (None if d == "?" else d) for d in v.type.shape]
                g.input.append(onnx.helper.make_tensor_value_info(name, v.type.dtype.onnx, dims))
        n = g.node.add()
        n.CopyFrom(node)
        for o in node.output:
            if o:
                g.output.append(onnx.ValueInfoProto(name=o))
        m = onnx.helper.make_model(g, opset_imports=list(self.lm.proto.opset_import))
        try:
            inferred = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001  (best effort; the caller reports unknown types)
            return None
        for vi in list(inferred.graph.output) + list(inferred.graph.value_info):
            if vi.name == output:
                try:
                    t = convert_type(vi.type)
                except TypeProblem:
                    return None
                if t is not None:
                    return t
        if node.domain == "ai.onnx.ml":
            return self._evaluate_type(m, node, operands, output)
        return None

    def _evaluate_type(self, m: onnx.ModelProto, node: onnx.NodeProto, operands: list[Value | None],
                       output: str) -> TensorType | None:
        """ONNX-ML ops mostly lack shape inference but their result shapes follow from
        operand shapes: run the reference kernel once on zeros (static, small operands only)."""
        if any(v is not None and (not v.type.is_static or v.type.numel > 1 << 16) for v in operands):
            return None
        from onnx.reference import ReferenceEvaluator

        feeds = {vi.name: np.zeros([d.dim_value for d in vi.type.tensor_type.shape.dim],
                                   onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
                 for vi in m.graph.input}
        try:
            outs = ReferenceEvaluator(m).run([output], feeds)
            return TensorType(DType.from_numpy(np.asarray(outs[0]).dtype), np.asarray(outs[0]).shape)
        except Exception:  # noqa: BLE001  (best effort, as above)
            return None


_ = DEFAULT_DOMAINS


def fold_shape_program(graph: Graph, vals: list[Value]) -> list[Value]:
    """An op of shape arithmetic on the input dims (`ir.symfold`) becomes one
    ``sym.dims`` op (or a constant), so later ops get exact symbolic types."""
    if len(vals) != 1 or vals[0].producer is None or vals[0].uses:
        return vals
    op = vals[0].producer
    val = fold_symbolically(op)
    if val is None:
        return vals
    new = shape_value_op(val, op.result.type.dtype, op.result.name)
    graph.erase(op)  # frees the name for the op that replaces it
    return [graph.insert(new).result]
