"""``--input_format``: the layout the compiled model's 4-D inputs are fed in.

ATC's meaning: ``NCHW`` (the default) and ``ND`` leave the model's inputs as
they are; with ``NHWC`` the user feeds every 4-D input as NHWC, and one
Transpose at the input gives the graph the NCHW tensor it was written for:

    graph @m(%input: tensor<1x1x8x8xf32>) {            graph @m(%input: tensor<1x8x8x1xf32>) attributes{input_format = "NHWC"} {
      %c = Conv(%input, %w) ...                 ==>      %input_nchw = Transpose(%input) {perm = [0, 3, 1, 2]} ...
                                                         %c = Conv(%input_nchw, %w) ...

``--input_shape`` gives the shape as fed, so NHWC for those inputs too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ir.core import Graph, Value
from ir.errors import UsageError
from ir.types import Dim, TensorType

__all__ = ["INPUT_FORMATS", "feed_nhwc", "nchw_input_shapes"]

INPUT_FORMATS = ("NCHW", "NHWC", "ND")
TO_NCHW = [0, 3, 1, 2]


def nchw_input_shapes(shapes: Mapping[str, Sequence[Dim]] | None) -> dict[str, list[Dim]] | None:
    """``--input_shape`` given as fed (NHWC) → the model's NCHW, for the 4-D entries."""
    if not shapes:
        return None
    return {k: [v[i] for i in TO_NCHW] if len(v) == 4 else list(v) for k, v in shapes.items()}


def feed_nhwc(g: Graph) -> list[str]:
    """Declare every 4-D input of `g` NHWC, with one Transpose to NCHW in front of
    its uses; returns the inputs' names (unchanged, so feeds keep their names)."""
    four_d = [(i, v) for i, v in enumerate(g.inputs) if v.type.rank == 4]
    if not four_d:
        found = ", ".join(f"{v.name} (rank {v.type.rank})" for v in g.inputs) or "none"
        raise UsageError(f"--input_format=NHWC: the model has no 4-D input to feed as NHWC; its inputs: {found}")
    first = g.ops[0] if g.ops else None
    for i, old in four_d:
        n, c, h, w = old.type.shape
        new = Value(old.name, TensorType(old.type.dtype, (n, h, w, c)))
        g.inputs[i] = new
        t = g.add_op("Transpose", [new], {"perm": list(TO_NCHW)}, names=[f"{old.name}_nchw"], before=first)
        assert t.result.type == old.type, (t.result.type, old.type)
        g.replace_value(old, t.result)
    g.attrs["input_format"] = "NHWC"
    return [v.name for _, v in four_d]
