"""``atcpy --mode=3``: check that a model compiles and runs, list every problem, write nothing.

Like ATC's precheck, problems are gathered rather than stopping at the first:
every op no engine can run (op type, node name, opset).  If there are none, the
model goes through the compile ``--mode=0`` runs (import, the pipeline, codegen),
in memory and with the verifier after every pass; the program is then loaded
into a `Session`, and, when every input has a static shape and the model is
small (`RUN_BUDGET_MS`), run once on zeros.  So a model whose compile or first
run would fail is never reported as fine.

    problems, report = precheck("model.onnx", "Ascend310P3")
    # ([], {...})  or  (["a first run on zeros fails: step 3 (Upsample 'up'): ..."], {...})
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.driver import CompileOptions, compile_with
from compiler.frontend import precheck as frontend_precheck
from ir.errors import AtcError, UsageError

__all__ = ["RUN_BUDGET_MS", "precheck"]

# A first run on zeros is made when the compile's latency estimate is at most this
# (squeezenet, shufflenet, inception_v1 are; resnet50 and vgg19 are not): the NumPy
# runtime is far slower than the estimate, and a precheck should stay quick.
RUN_BUDGET_MS = 2.0


def precheck(model: Any, soc_version: str, **options: Any) -> tuple[list[str], dict | None]:
    """(problems, None) when `model` cannot be compiled, else (problems of loading or a
    first run of the program, its compile report)."""
    opts = CompileOptions(soc_version=soc_version, **options)
    opts.check()
    problems = frontend_precheck(model)
    if problems:
        return problems, None
    opts.verify_each = True  # the verifier catches a pass leaving inconsistent types before a run would
    try:
        exe = compile_with(model, opts)
    except UsageError:
        raise
    except AtcError as e:  # the memory budget, a pass or codegen failing, what the frontend check cannot see
        return [str(e)], None
    return first_run_problems(exe), exe.full_report


def first_run_problems(exe: Any, budget_ms: float = RUN_BUDGET_MS) -> list[str]:
    """Load `exe` into a Session (binding every step to a kernel, folding the constant
    ones) and, if its inputs are static and the estimate is within `budget_ms`, run it
    once on zeros; what fails is the problem list."""
    from runtime.session import Session

    try:
        sess = Session(exe)
    except Exception as e:  # noqa: BLE001 - any load failure is a problem to report
        return [f"the compiled program does not load: {_describe(e)}"]
    inputs = sess.get_inputs()
    if any(not isinstance(d, int) for i in inputs for d in i.shape):
        return []  # no shape to pick for symbolic dims; the load checks still ran
    if float(exe.full_report.get("estimated_latency_ms") or 0.0) > budget_ms:
        return []
    from runtime.om import np_dtype

    feeds = {i.name: np.zeros(i.shape, np_dtype(i.dtype)) for i in inputs}
    try:
        sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - the first run failing is exactly what to report
        return [f"a first run on zeros fails: {_describe(e)}"]
    return []


def _describe(e: BaseException) -> str:
    kind = getattr(e, "kind", None)
    return f"{kind}: {e}" if isinstance(kind, str) else f"{type(e).__name__}: {e}"
