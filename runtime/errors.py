"""Errors the runtime reports (exit codes continue ir.errors')."""

from __future__ import annotations

__all__ = ["InputError", "InvalidOmError", "OmFormatError", "RuntimeFailure"]


class RuntimeFailure(Exception):
    exit_code = 1
    kind = "runtime error"


class OmFormatError(RuntimeFailure):
    """The .om file is truncated, corrupt, of another version, or not an .om at all."""

    exit_code = 4
    kind = "invalid .om file"


class InvalidOmError(OmFormatError):
    """The .om frame is intact but its program is not one this runtime can run safely
    (a dangling reference, an out-of-range attribute, an arena beyond the memory limit).
    The message names the step and field."""

    kind = "invalid .om program"


class InputError(RuntimeFailure):
    """Feeds do not match the model's inputs (names, dtypes, shapes)."""

    exit_code = 5
    kind = "bad input"
