"""atcpy's typed IR: types, values/ops/graphs, the op registry, verifier and text form."""

from ir import ops  # noqa: F401  (registers every op declaration before anything looks one up)
from ir.core import Graph, Op, Use, Value
from ir.parser import ParseError, parse, parse_type
from ir.printer import print_graph, print_op
from ir.registry import all_ops, infer_types, lookup
from ir.types import DType, TensorType
from ir.verifier import VerifyError, verify

__all__ = [
    "DType",
    "Graph",
    "Op",
    "ParseError",
    "TensorType",
    "Use",
    "Value",
    "VerifyError",
    "all_ops",
    "infer_types",
    "lookup",
    "parse",
    "parse_type",
    "print_graph",
    "print_op",
    "verify",
]
