"""``atcpy --mode=3``: check that a model compiles, list every problem, write nothing.

Like ATC's precheck, problems are gathered rather than stopping at the first:
every op no engine can run (op type, node name, opset), then — if the model
imports — the memory budget.  When the model compiles, the report (ops by
engine, memory plan) is returned so the CLI can print it.
"""

from __future__ import annotations

from typing import Any

from compiler.driver import Compilation, CompileOptions, lower_to_ir, run_passes
from compiler.frontend import precheck as frontend_precheck
from compiler.report import build_report
from ir.errors import AtcError, UsageError
from passes.target.soc import load_soc

__all__ = ["precheck"]


def precheck(model: Any, soc_version: str, **options: Any) -> tuple[list[str], dict | None]:
    """(problems, None) when `model` cannot be compiled, else ([], its compile report)."""
    opts = CompileOptions(soc_version=soc_version, **options)
    opts.check()
    soc = load_soc(soc_version)
    problems = frontend_precheck(model)
    if problems:
        return problems, None
    try:
        g = lower_to_ir(model, opts)
        before = sum(1 for op in g.ops if op.kind != "const")
        results, stats = run_passes(g, opts, soc, model)
    except UsageError:
        raise
    except AtcError as e:  # the memory budget, or what the frontend's check cannot see
        return [str(e)], None
    return [], build_report(Compilation(g, soc, stats, results, 0.0, before), opts, str(model))
