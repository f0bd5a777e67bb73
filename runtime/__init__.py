"""The NumPy runtime: load an `.om` executable and run it (`Session`, `atcpy-run`).

The runtime imports nothing from `compiler`, `passes` or `codegen`, only `ir`'s
declarations (dtypes, the annotation attributes): `runtime.om` reads the file,
`runtime.kernels` holds the kernels, and `runtime.kernels.aicpu` is the ONNX
bridge (``onnx.reference``) that runs AICPU steps and that the passes reuse to
fold constants.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Executable", "Generator", "InputError", "OmFormatError", "RuntimeFailure", "Session", "load_executable"]


def __getattr__(name: str) -> Any:  # lazy, so `import runtime.errors` stays light
    if name == "Session":
        from runtime.session import Session

        return Session
    if name in ("Generator", "GenerationStats"):
        from runtime import generator

        return getattr(generator, name)
    if name in ("Executable", "load_executable"):
        from runtime import om

        return getattr(om, name)
    if name in ("OmFormatError", "InputError", "RuntimeFailure"):
        from runtime import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
