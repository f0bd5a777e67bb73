"""Codegen: final IR graph -> linear program -> one `.om` executable file."""

from codegen.lower import LoweringError, Program, lower
from codegen.om import Executable, build_executable, default_report

__all__ = ["Executable", "LoweringError", "Program", "build_executable", "default_report", "lower"]
