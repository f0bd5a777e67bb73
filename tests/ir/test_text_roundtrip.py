"""The text form round-trips: print(parse(print(g))) == print(g), for generated graphs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ir import DType, Graph, ParseError, TensorType, parse, parse_type, print_graph, verify

NAMES = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
    st.from_regex(r"/layer[0-9]/Conv_output_[0-9]", fullmatch=True),
    st.text(alphabet="ab:c \"\\é", min_size=1, max_size=6),  # names that must be quoted
)
DIMS = st.one_of(st.integers(1, 5), st.sampled_from(["N", "?", "batch size"]))
SCALARS = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.text(max_size=8),
)
ATTRS = st.dictionaries(
    st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True),
    st.one_of(SCALARS, st.lists(st.integers(-9, 9), max_size=4), st.lists(st.floats(-1e3, 1e3), max_size=3)),
    max_size=3,
)


@st.composite
def graphs(draw) -> Graph:
    g = Graph(draw(st.sampled_from(["main", "m-1", "weird name"])))
    shape = tuple(draw(st.lists(DIMS, min_size=1, max_size=3)))
    dtype = draw(st.sampled_from([DType.f32, DType.f16, DType.i64, DType.i8]))
    vals = [g.add_input(draw(NAMES), TensorType(dtype, shape))]
    for _ in range(draw(st.integers(0, 6))):
        choice = draw(st.sampled_from(["unary", "binary", "const", "opaque", "split"]))
        name = draw(NAMES)
        if choice == "unary":
            vals.append(g.add_op("Relu", [draw(st.sampled_from(vals))], names=[name]).result)
        elif choice == "binary":
            a, b = draw(st.sampled_from(vals)), draw(st.sampled_from(vals))
            if a.type.dtype == b.type.dtype and a.type.shape == b.type.shape:
                vals.append(g.add_op("Add", [a, b], names=[name]).result)
        elif choice == "const":
            n = draw(st.sampled_from([1, 3, 17, 40]))
            cdt = draw(st.sampled_from([np.float32, np.int64, np.float16, np.bool_, np.int8]))
            arr = np.arange(n).astype(cdt) if cdt is not np.float32 else (np.arange(n) / 7).astype(cdt)
            vals.append(g.const(arr, name=name))
        elif choice == "opaque":
            src = draw(st.sampled_from(vals))
            op = g.add_op(
                "ai.custom.Thing",
                [src, None],
                draw(ATTRS),
                result_types=[src.type, TensorType(DType.bool, ())],
                names=[name, name + "_2"],
            )
            vals.extend(op.results)
        else:
            src = vals[0]
            if isinstance(src.type.shape[0], int) and src.type.shape[0] >= 2:
                op = g.add_op("Split", [src], {"axis": 0, "split": [1, src.type.shape[0] - 1]})
                vals.extend(op.results)
    g.outputs = draw(st.lists(st.sampled_from(vals), min_size=1, max_size=2, unique_by=id))
    if draw(st.booleans()):
        g.attrs["arena_bytes"] = draw(st.integers(0, 10**9))
    return g


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_print_parse_print_is_identity(g: Graph) -> None:
    resources: dict[str, np.ndarray] = {}
    text = print_graph(g, resources)
    g2 = parse(text, resources)
    assert print_graph(g2) == text
    verify(g2)


@settings(max_examples=30, deadline=None)
@given(graphs())
def test_generated_graphs_verify(g: Graph) -> None:
    verify(g)


@given(st.lists(DIMS, max_size=4), st.sampled_from(list(DType)))
def test_type_roundtrip(shape, dtype) -> None:
    from ir.printer import format_type

    t = TensorType(dtype, tuple(shape))
    assert parse_type(format_type(t)) == t


def test_large_constants_are_referenced_not_printed() -> None:
    g = Graph("w")
    x = g.add_input("x", TensorType(DType.f32, (1, 64)))
    w = g.const(np.ones((64, 64), np.float32), name="big")
    g.outputs = [g.add_op("MatMul", [x, w]).result]
    text = print_graph(g)
    assert 'dense_resource<"big">' in text
    assert text.count("1.0") == 0
    with pytest.raises(ParseError, match="no array given"):
        parse(text)
    assert parse(text, synthesize=True).ops[0].attrs["value"].shape == (64, 64)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("graph @g() -> () {\n  return %x\n}", "undefined value %x"),
        ("graph @g(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %y = Relu(%z) : (tensor<2xf32>) -> tensor<2xf32>\n  return %y\n}", "undefined value %z"),
        ("graph @g(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %y = Relu(%x) : (tensor<3xf32>) -> tensor<2xf32>\n  return %y\n}", "has type tensor<2xf32>"),
        ("graph @g(%x: tensor<2xq7>) -> () {\n  return\n}", "unknown element type"),
        ("graph @g(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %y = Relu(%x) :\n}", "Unexpected"),
    ],
)
def test_parse_errors_name_the_problem(bad: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse(bad)
