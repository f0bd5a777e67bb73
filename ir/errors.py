"""Errors the compiler reports to users, each with its own exit code.

    0  success
    1  internal error (a bug in atcpy: the message says which pass/stage)
    2  usage error (bad flags, unknown --soc_version, missing files)
    3  unsupported or malformed model (bad ONNX bytes, what onnx.checker or strict
       shape inference rejects, a node whose types cannot be inferred -- named --,
       windows that do not fit their input, local functions that inline to too
       many nodes, ops no engine can run, shapes that do not fit the SoC's memory)
    4  invalid .om file (truncated, corrupt, wrong version)   -- runtime.errors
    5  bad input data (wrong input names, shapes, dtypes)     -- runtime.errors
"""

from __future__ import annotations

__all__ = ["AtcError", "InternalError", "MemoryBudgetError", "UnsupportedModelError", "UsageError"]


class AtcError(Exception):
    exit_code = 1
    kind = "internal error"


class UsageError(AtcError):
    exit_code = 2
    kind = "usage error"


class UnsupportedModelError(AtcError):
    exit_code = 3
    kind = "unsupported model"


class MemoryBudgetError(UnsupportedModelError):
    kind = "model does not fit in memory"


class InternalError(AtcError):
    exit_code = 1
    kind = "internal error"
