"""The ONNX frontend: an ONNX model (opset 9 and up) into atcpy's IR.

    g = import_onnx("resnet50.onnx", input_shapes={"data": [1, 3, 224, 224]})
    problems = precheck("model.onnx")     # [] when every op can run somewhere

Declared ops (see `ir.ops`) come out in their latest-ONNX form with inferred
types; other valid ONNX ops are opaque (typed by ONNX shape inference, attr
``opset``) and run on the AICPU through `onnx.reference`.  Ops no engine can
run are reported all at once as one `UnsupportedModelError`.
"""

from __future__ import annotations

from compiler.frontend.coverage import coverage, precheck
from compiler.frontend.importer import Importer
from compiler.frontend.onnx_model import ModelLike, infer_value_types, load_model, shape_model
from compiler.frontend.support import find_problems, format_problems
from ir.core import Graph
from ir.errors import UnsupportedModelError, UsageError
from ir.types import Dim

__all__ = ["coverage", "import_onnx", "precheck"]


def import_onnx(
    model: ModelLike,
    input_shapes: dict[str, list[Dim]] | None = None,
    *,
    strict: bool = False,
    diagnostics: list[str] | None = None,
) -> Graph:
    """Import `model` (a ModelProto, a path or serialized bytes).

    `input_shapes` overrides graph input shapes by name (ints; -1 or ``"?"`` for an
    unknown dim, other strings for symbols).  With `strict`, any disagreement between
    atcpy's type inference and ONNX's is an `InternalError` (tests use it); otherwise it
    is logged and appended to `diagnostics`.
    """
    lm = load_model(model)
    check_input_shapes(lm, input_shapes)
    types, warnings = infer_value_types(shape_model(lm, input_shapes))
    if diagnostics is not None:
        diagnostics.extend(warnings)
    problems = find_problems(lm, types)
    if problems:
        raise UnsupportedModelError(format_problems(problems))
    return Importer(lm, types, strict=strict, diagnostics=diagnostics).run()


def check_input_shapes(lm, input_shapes: dict[str, list[Dim]] | None) -> None:
    if not input_shapes:
        return
    g = lm.proto.graph
    inits = {t.name for t in g.initializer}
    real = {vi.name: vi for vi in g.input if vi.name not in inits}
    for name, shape in input_shapes.items():
        if name not in real:
            raise UsageError(f"input_shapes names {name!r}, which is not a model input; "
                             f"the inputs are: {', '.join(repr(n) for n in real) or '(none)'}")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(d, (int, str)) for d in shape):
            raise UsageError(f"input_shapes[{name!r}] must be a list of ints or symbol names, got {shape!r}")
        tt = real[name].type.tensor_type
        if tt.HasField("shape") and len(tt.shape.dim) != len(shape):
            raise UsageError(f"input {name!r} has rank {len(tt.shape.dim)}, but input_shapes gives "
                             f"{len(shape)} dims {list(shape)}")
        for d in shape:
            if isinstance(d, int) and d < -1:
                raise UsageError(f"input_shapes[{name!r}] has an invalid dim {d}")
