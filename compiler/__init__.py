"""The atcpy compiler driver: frontend, pipeline, SoC data, CLI.

    from compiler import compile_model
    exe = compile_model("model.onnx", soc_version="Ascend310P3")
    exe.save("out/model.om")
"""

from ir.errors import AtcError, InternalError, MemoryBudgetError, UnsupportedModelError, UsageError


def compile_model(model, soc_version: str = "Ascend310P3", **options):
    """See `compiler.driver.compile_model`."""
    from compiler.driver import compile_model as _compile

    return _compile(model, soc_version, **options)


__all__ = ["AtcError", "InternalError", "MemoryBudgetError", "UnsupportedModelError", "UsageError", "compile_model"]
