"""The NumPy runtime: load an `.om` executable and run it (`Session`, `atcpy-run`).

The runtime imports nothing compile-side: `runtime.om` reads the file,
`runtime.kernels` holds the kernels (``onnx.reference`` only for AICPU steps).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Executable", "InputError", "OmFormatError", "RuntimeFailure", "Session", "load_executable"]


def __getattr__(name: str) -> Any:  # lazy, so `import runtime.errors` stays light
    if name == "Session":
        from runtime.session import Session

        return Session
    if name in ("Executable", "load_executable"):
        from runtime import om

        return getattr(om, name)
    if name in ("OmFormatError", "InputError", "RuntimeFailure"):
        from runtime import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
