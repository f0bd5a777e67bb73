"""``atcpy --mode=3``: check that a model compiles and runs, list every problem, write nothing.

Like ATC's precheck, problems are gathered rather than stopping at the first:
every op no engine can run (op type, node name, opset).  If there are none, the
model goes through the compile ``--mode=0`` runs (import, the pipeline, codegen),
in memory and with the verifier after every pass; the program is then loaded
into a `Session`, and, when the model is small (`RUN_BUDGET_MS`), run on zeros:
once, or at the lowest and highest bounds of its symbolic dims (the first and the
last gear).  So a model whose compile or first run would fail is never reported
as fine.

    problems, report = precheck("model.onnx", "Ascend310P3")
    # ([], {...})  or  (["a first run on zeros fails: step 3 (Upsample 'up'): ..."], {...})
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.driver import CompileOptions, compile_with
from compiler.frontend import precheck as frontend_precheck
from ir.errors import AtcError, UsageError
from ir.symbolic import dim_value

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
    ones) and, if the estimate is within `budget_ms`, run it on zeros: once for static
    inputs, at both ends of the bounds of symbolic ones; what fails is the problem list."""
    from runtime.session import Session

    try:
        sess = Session(exe)
    except Exception as e:  # noqa: BLE001 - any load failure is a problem to report
        return [f"the compiled program does not load: {_describe(e)}"]
    if float(exe.full_report.get("estimated_latency_ms") or 0.0) > budget_ms:
        return []
    from runtime.om import np_dtype

    problems = []
    for where, env in _bound_points(exe.program):
        try:
            feeds = {i.name: np.zeros([dim_value(d, env) for d in i.shape], np_dtype(i.dtype))
                     for i in sess.get_inputs()}
            with np.errstate(all="ignore"):  # zeros may give NaN (a softmax over a masked row): not a problem
                sess.run(None, feeds)
        except (KeyError, ValueError):
            return problems  # a symbol without bounds: no shape to pick; the load checks still ran
        except Exception as e:  # noqa: BLE001 - the first run failing is exactly what to report
            problems.append(f"a first run on zeros{where} fails: {_describe(e)}")
    return problems


def _bound_points(program: dict) -> list[tuple[str, dict[str, int]]]:
    """The symbol bindings a precheck runs at: none for static inputs; the lowest
    and highest bounds (the first and last gear) otherwise, so the shape program
    and the plan are exercised at both ends."""
    gears, ranges = program.get("gears"), program.get("dims") or {}
    if gears:
        points = [dict(zip(gears["dims"], gears["values"][k])) for k in (0, -1)]
    elif ranges:
        points = [{s: int(r[k]) for s, r in ranges.items()} for k in (0, 1)]
    else:
        return [("", {})]
    return [(" at " + ", ".join(f"{k}={v}" for k, v in sorted(p.items())), p) for p in points]


def _describe(e: BaseException) -> str:
    kind = getattr(e, "kind", None)
    return f"{kind}: {e}" if isinstance(kind, str) else f"{type(e).__name__}: {e}"
