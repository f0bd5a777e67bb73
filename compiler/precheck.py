"""``atcpy --mode=3``: check that a model compiles, fits and runs, list every problem; writes only --report.

Like ATC's precheck, problems are gathered rather than stopping at the first:
every op no engine can run (op type, node name, opset).  If there are none, the
model goes through the compile ``--mode=0`` runs (import, the pipeline, codegen),
in memory and with the verifier after every pass; the program is then loaded
into a `Session`, and, when the model is small (`RUN_BUDGET_MS`), run on zeros:
once, or at the lowest and highest bounds of its symbolic dims (the first and the
last gear).  So a model whose compile or first run would fail is never reported
as fine.

The report's memory table (`compiler.report.format_memory`) gives each source of
memory -- weights by dtype, the KV cache and the activations at the bounds of the
dims, their total -- against the budget (the SoC's DDR or ``mem_limit``) and a
verdict.  A model whose weights are external data (a 7B decoder's 13 GB) is
planned without reading them (`plan_only` with ``weights_meta_only``): import maps
the files, the passes make placeholders for the weights they would compute, and
codegen and the first run are skipped (the report says so).  A plan that does not
fit is a problem, with the table printed.

    problems, report = precheck("model.onnx", "Ascend310P3")
    # ([], {...})  or  (["a first run on zeros fails: step 3 (Upsample 'up'): ..."], {...})
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from compiler.driver import CompileOptions, compile_with
from compiler.frontend import precheck as frontend_precheck
from ir.errors import AtcError, InternalError, MemoryBudgetError, UsageError
from ir.symbolic import dim_value

__all__ = ["RUN_BUDGET_MS", "plan_only", "precheck"]

# A first run on zeros is made when the compile's latency estimate is at most this
# (squeezenet, shufflenet, inception_v1 are; resnet50 and vgg19 are not): the NumPy
# runtime is far slower than the estimate, and a precheck should stay quick.
RUN_BUDGET_MS = 2.0
META_NOTE = ("the weights are external data and were not read (sizes only): the program was not built "
             "and not run")


def precheck(model: Any, soc_version: str, **options: Any) -> tuple[list[str], dict | None]:
    """(problems, None) when `model` cannot be compiled, else (problems of loading or a
    first run of the program, or of its memory plan; its compile report).  A model
    whose weights are external data is planned without reading them (`plan_only`)."""
    opts = CompileOptions(soc_version=soc_version, **options)
    opts.check()
    problems = frontend_precheck(model)
    if problems:
        return problems, None
    opts.verify_each = True  # the verifier catches a pass leaving inconsistent types before a run would
    if not opts.weights_meta_only and _has_external_data(model):
        opts.weights_meta_only = True
    if opts.weights_meta_only:
        return plan_only(model, opts)
    try:
        exe = compile_with(model, opts)
    except UsageError:
        raise
    except MemoryBudgetError as e:  # the plan is still worth showing: what does not fit, by source
        return [str(e)], _report_or_none(model, opts)
    except AtcError as e:  # a pass or codegen failing, what the frontend check cannot see
        return [str(e)], None
    return first_run_problems(exe), exe.full_report


def plan_only(model: Any, opts: CompileOptions) -> tuple[list[str], dict | None]:
    """Import and run the pipeline with no memory budget (so the whole plan is made),
    without codegen or a run; the budget is then applied to the report: a plan that
    does not fit is one problem, with its sizes.  With ``weights_meta_only`` no pass
    reads a weight byte (`passes._meta`)."""
    try:
        report = _plan_report(model, opts)
    except UsageError:
        raise
    except AtcError as e:
        return [str(e)], None
    mem = report["memory"]
    if opts.weights_meta_only:
        mem["weights_read"] = False
        report["note"] = META_NOTE
    if mem.get("fits", True):
        return [], report
    from passes.assign_buffers import format_bytes

    problem = (f"the plan does not fit: total {format_bytes(mem['total_bytes'])} exceeds "
               f"{format_bytes(mem['budget_bytes'])}, {mem['budget']}, by {format_bytes(-mem['margin_bytes'])}")
    return [problem], report


def _plan_report(model: Any, opts: CompileOptions) -> dict:
    from compiler.driver import Compilation, lower_to_ir, run_passes
    from compiler.report import build_report
    from passes.target.soc import load_soc

    soc = load_soc(opts.soc_version)
    unbudgeted = dataclasses.replace(opts, mem_limit=None)
    try:
        t0 = time.perf_counter()
        g = lower_to_ir(model, opts)
        import_s = time.perf_counter() - t0
        ops_before = sum(1 for op in g.ops if op.kind != "const")
        passes, stats = run_passes(g, unbudgeted, dataclasses.replace(soc, ddr_bytes=0), model)
        return build_report(Compilation(g, soc, stats, passes, import_s, ops_before), opts, _model_name(model))
    except AtcError:
        raise
    except MemoryError as e:
        raise MemoryBudgetError(f"the host ran out of memory while planning: {e}") from e
    except Exception as e:
        raise InternalError(f"{type(e).__name__}: {e}") from e


def _report_or_none(model: Any, opts: CompileOptions) -> dict | None:
    try:
        return _plan_report(model, opts)
    except AtcError:
        return None


def _has_external_data(model: Any) -> bool:
    from compiler.frontend.external_data import has_external_data
    from compiler.frontend.onnx_model import load_model

    try:
        return has_external_data(load_model(model).proto)
    except AtcError:
        return False


def _model_name(model: Any) -> str:
    graph = getattr(model, "graph", None)
    if isinstance(model, (str, Path)):
        return Path(model).stem
    return graph.name if graph is not None and graph.name else "model"


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
