"""The KV cache: ``kv.append`` is a Concat along the sequence axis whose result
the executable owns.

The ``kv-cache`` pass turns each layer's ``past -> Concat(sequence axis) -> present``
into ``kv.append``.  Its meaning is Concat's, so every caller gets the same
values; codegen gives its result a buffer of its own, ``[batch, heads, max_len,
head_dim]`` at the bounds, that lives across runs.  The kernel writes only the
new positions when ``past`` already is that buffer's prefix (the generator feeds
each step's ``present`` back as the next ``past``, a view, not a copy); otherwise
it copies ``past`` in first.

    %present = Concat(%past, %new) {axis = -2} : (tensor<1x2x"P"x16xf32>, tensor<1x2x"S"x16xf32>) -> tensor<1x2x"P + S"x16xf32>
    // kv-cache ==>
    %present = kv.append(%past, %new) {axis = 2} : (tensor<1x2x"P"x16xf32>, tensor<1x2x"S"x16xf32>) -> tensor<1x2x"P + S"x16xf32>
"""

from __future__ import annotations

from ir.core import Op
from ir.ops._infer import norm_axis, operand_type
from ir.registry import VECTOR_ONLY, Attr, TypeInferenceError, define
from ir.symbolic import dim_add
from ir.types import TensorType

__all__: list[str] = []


def _append(op: Op) -> list[TensorType]:
    past, new = operand_type(op, 0), operand_type(op, 1)
    a = norm_axis(op.attrs["axis"], past.rank, op)
    if past.rank != new.rank or past.dtype != new.dtype:
        raise TypeInferenceError(f"kv.append: {past} and {new} differ in rank or dtype")
    return [past.with_shape(past.shape[:a] + (dim_add(past.shape[a], new.shape[a]),) + past.shape[a + 1:])]


define("kv.append", operands=2, infer=_append, engines=VECTOR_ONLY, attrs={"axis": Attr("int", required=True)},
       doc="%present = kv.append(%past, %new) {axis = 2}: Concat into a cache the executable owns")
