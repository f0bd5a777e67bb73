"""Errors the runtime reports (exit codes continue ir.errors')."""

from __future__ import annotations

__all__ = ["InputError", "OmFormatError", "RuntimeFailure"]


class RuntimeFailure(Exception):
    exit_code = 1
    kind = "runtime error"


class OmFormatError(RuntimeFailure):
    """The .om file is truncated, corrupt, of another version, or not an .om at all."""

    exit_code = 4
    kind = "invalid .om file"


class InputError(RuntimeFailure):
    """Feeds do not match the model's inputs (names, dtypes, shapes)."""

    exit_code = 5
    kind = "bad input"
