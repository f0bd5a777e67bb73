"""The pass interface shared by every pass and the pass manager.

A pass is a dataclass with a kebab-case `name`; its fields are its options
(``tile{size=256}`` sets ``TilePass.size``).  `run` mutates the graph in place
and returns whether it changed anything.  Passes register with `register`;
`passes/__init__.py` imports every module in the package, so a new pass is one
new file.

    @register
    @dataclass
    class Canonicalize(Pass):
        name: ClassVar[str] = "canonicalize"
        def run(self, graph: Graph, ctx: PassContext) -> bool: ...
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ir.core import Graph
from passes.options import PassOptions

__all__ = ["PASSES", "Pass", "PassContext", "PassError", "PassOptions", "register"]

log = logging.getLogger("atcpy")


class PassError(Exception):
    """A pass found the graph in a state it cannot handle (bad input, not a bug)."""


@dataclass
class PassContext:
    """What a pass may read besides the graph: the SoC, the options (typed,
    `PassOptions`; a dict is checked and converted), and where to put statistics
    (`stats[section][key]`, read into the compile report).

    What a pass leaves for the caller besides statistics lives here, not among
    the (frozen) options: `equalized`, the layers the quantize pass rescaled."""

    soc: Any = None  # passes.target.soc.Soc
    options: PassOptions = field(default_factory=PassOptions)
    stats: dict[str, Counter] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)
    log: logging.Logger = log
    equalized: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.options, Mapping):
            self.options = PassOptions.from_dict(self.options)
        elif not isinstance(self.options, PassOptions):
            raise TypeError(f"PassContext.options must be PassOptions or a dict, got {type(self.options).__name__}")

    def count(self, section: str, key: str, n: int = 1) -> None:
        self.stats.setdefault(section, Counter())[key] += n


@dataclass
class Pass:
    name: ClassVar[str] = ""

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        raise NotImplementedError


PASSES: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in PASSES:
        raise ValueError(f"pass {cls.name!r} registered twice")
    PASSES[cls.name] = cls
    return cls
