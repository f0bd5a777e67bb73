"""SoC models: one JSON data file per Ascend SoC, loaded into a frozen `Soc`.

    soc = load_soc("Ascend310P3")
    soc.ai_cores, soc.cube_fractal["i8"], soc.ddr_bandwidth     # 8, (16, 32, 16), 68e9

Every number in a data file is a *fact*: ``{"value": v, "source": "..."}`` when a
public source (or the team's seed notes) gives it, ``{"value": v, "estimated":
true, "note": "why this value"}`` when it is a modelling choice.  `Soc.facts`
keeps the raw file so reports can cite where a number came from;
`tests/soc` checks that no bare number slips in.

Fractal shapes are ``[M, K, N]`` of one Cube instruction (``16x16x16`` for fp16,
``16x32x16`` for int8): the unit the cost model counts and the tile pass aligns to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ir.errors import UsageError

__all__ = ["DEFAULT_SOC", "SUPPORTED", "Soc", "iter_facts", "load_soc"]

_DIR = Path(__file__).parent
SUPPORTED: list[str] = sorted(p.stem for p in _DIR.glob("*.json"))
DEFAULT_SOC = "Ascend310P3"


@dataclass(frozen=True)
class Soc:
    """What placement, tiling and the cost model need to know about one SoC."""

    name: str
    description: str
    ai_cores: int
    clock_hz: float
    cube_fractal: Mapping[str, tuple[int, int, int]]  # dtype -> (m, k, n) of one Cube instruction
    cube_cycles_per_fractal: float
    cube_setup_cycles: float
    cube_tile_overhead_cycles: float
    max_cube_block: int
    vector_bytes_per_cycle: int
    vector_setup_cycles: float
    vector_matmul_efficiency: float
    vector_dtypes: frozenset[str]
    vector_unsupported: frozenset[str] = field(repr=False)  # declared Vector kernels this SoC lacks
    kernel_launch_s: float
    aicpu_launch_s: float
    aicpu_slowdown: float
    l0a_bytes: int
    l0b_bytes: int
    l0c_bytes: int
    l1_bytes: int
    ub_bytes: int
    ddr_bytes: int
    ddr_bandwidth: float  # bytes per second
    facts: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def cube_dtypes(self) -> frozenset[str]:
        return frozenset(self.cube_fractal)

    def cube_supports(self, dtype: str) -> bool:
        return dtype in self.cube_fractal

    def vector_supports(self, dtype: str) -> bool:
        return dtype in self.vector_dtypes

    def vector_runs(self, kind: str, dtype: str) -> bool:
        """The Vector unit runs `kind` (declared with a Vector kernel) on `dtype`."""
        return kind not in self.vector_unsupported and dtype in self.vector_dtypes

    def vector_lanes(self, itemsize: int) -> int:
        """Elements one core's Vector unit processes per cycle."""
        return max(1, self.vector_bytes_per_cycle // max(1, itemsize))

    def cube_macs_per_cycle(self, dtype: str) -> int:
        """Multiply-accumulates one core's Cube does per cycle for `dtype`."""
        m, k, n = self.cube_fractal[dtype]
        return int(m * k * n / self.cube_cycles_per_fractal)


def _v(node: Any) -> Any:
    if not (isinstance(node, dict) and "value" in node):
        raise ValueError(f"expected a fact {{'value': ..., 'source'|'estimated': ...}}, got {node!r}")
    return node["value"]


def iter_facts(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every fact (a dict with ``value``) in a data file, with its dotted path;
    numbers found outside a fact are yielded as ``(path, number)`` so a test can
    reject them."""
    if isinstance(node, dict):
        if "value" in node:
            yield path, node
            return
        for k, v in node.items():
            yield from iter_facts(v, f"{path}.{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iter_facts(v, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def _freeze(d: dict) -> Mapping:
    return MappingProxyType({k: _freeze(v) if isinstance(v, dict) else v for k, v in d.items()})


@cache
def load_soc(name: str | None = None) -> Soc:
    """Load a SoC model by its ATC ``--soc_version`` name (default Ascend310P3)."""
    name = name or DEFAULT_SOC
    path = _DIR / f"{name}.json"
    if name not in SUPPORTED or not path.is_file():
        raise UsageError(f"unknown --soc_version {name!r}; supported: {', '.join(SUPPORTED)}")
    raw = json.loads(path.read_text())
    cube, vec, aicpu, mem = raw["cube"], raw["vector"], raw["aicpu"], raw["memory"]
    dtypes = _v(cube["dtypes"])
    fractal = {dt: tuple(_v(cube["fractal_mkn"][dt])) for dt in dtypes}
    return Soc(
        name=raw["name"],
        description=raw.get("description", ""),
        ai_cores=int(_v(raw["ai_cores"])),
        clock_hz=float(_v(raw["clock_ghz"])) * 1e9,
        cube_fractal=MappingProxyType(fractal),
        cube_cycles_per_fractal=float(_v(cube["cycles_per_fractal"])),
        cube_setup_cycles=float(_v(cube["setup_cycles"])),
        cube_tile_overhead_cycles=float(_v(cube["tile_overhead_cycles"])),
        max_cube_block=int(_v(cube["max_block"])),
        vector_bytes_per_cycle=int(_v(vec["bytes_per_cycle"])),
        vector_setup_cycles=float(_v(vec["setup_cycles"])),
        vector_matmul_efficiency=float(_v(vec["matmul_efficiency"])),
        vector_dtypes=frozenset(_v(vec["dtypes"])),
        vector_unsupported=frozenset(_v(vec["unsupported_ops"])),
        kernel_launch_s=float(_v(raw["kernel_launch_us"])) * 1e-6,
        aicpu_launch_s=float(_v(aicpu["launch_overhead_us"])) * 1e-6,
        aicpu_slowdown=float(_v(aicpu["slowdown_vs_vector"])),
        l0a_bytes=int(_v(mem["l0a_bytes"])),
        l0b_bytes=int(_v(mem["l0b_bytes"])),
        l0c_bytes=int(_v(mem["l0c_bytes"])),
        l1_bytes=int(_v(mem["l1_bytes"])),
        ub_bytes=int(_v(mem["ub_bytes"])),
        ddr_bytes=int(_v(raw["ddr_bytes"])),
        ddr_bandwidth=float(_v(raw["ddr_bandwidth_gbps"])) * 1e9,
        facts=_freeze(raw),
    )
