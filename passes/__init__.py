"""Passes, one file each; importing the package registers them all."""

import importlib
import pkgutil

from passes.base import PASSES, Pass, PassContext, PassError, register

for _m in pkgutil.iter_modules(__path__):
    if not _m.ispkg and not _m.name.startswith("_") and _m.name != "base":
        importlib.import_module(f"passes.{_m.name}")

__all__ = ["PASSES", "Pass", "PassContext", "PassError", "register"]
