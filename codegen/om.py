"""Build an `.om` executable from a final IR graph.

The format itself (writer, reader, validation) lives in `runtime.om` so the
runtime loads executables without importing anything compile-side; this module
re-exports it and adds the compile-side builder::

    exe = build_executable(graph, soc_version="Ascend310P3", report=report)
    exe.save("out/model.om")          # atomic: temp file + os.replace (checked as the loader will)
    Executable.load("out/model.om")   # validated; OmFormatError when bad
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from codegen.lower import Program, lower
from ir.core import Graph
from ir.errors import InternalError
from runtime.errors import InvalidOmError
from runtime.om import FORMAT_VERSION, MAGIC, Executable, decode_json_value, encode_json_value, load_executable
from runtime.validate import validate_executable

__all__ = ["FORMAT_VERSION", "MAGIC", "Executable", "build_executable", "default_report", "load_executable"]


def default_report(graph: Graph, program: Program, soc_version: str | None) -> dict[str, Any]:
    """A compile report derived from the program alone (when the driver gives none)."""
    by_engine = Counter(s["engine"] for s in program.steps)
    fusion = Counter(s["kernel"].split(".", 1)[1] for s in program.steps if s["kernel"].startswith("fused."))
    tiled = [s for s in program.steps if "tile" in s["attrs"]]
    tiles = 0
    for s in tiled:
        n = 1
        for t in s["attrs"].get("tiles") or []:
            n *= int(t)
        tiles += n
    cycles = sum(float(s["attrs"].get("cost_cycles", 0) or 0) for s in program.steps)
    return {
        "model": graph.name,
        "soc_version": soc_version,
        "ops": {"total": len(program.steps), "by_engine": {k: by_engine.get(k, 0) for k in ("cube", "vector", "aicpu")}},
        "fusion": dict(sorted(fusion.items())),
        "tiling": {"tiled_ops": len(tiled), "tiles": tiles},
        "memory": {k: program.memory[k] for k in ("arena_bytes", "lower_bound_bytes", "naive_bytes", "weights_bytes")},
        "estimated_cycles": cycles,
    }


def build_executable(
    graph: Graph,
    *,
    soc_version: str | None = None,
    model_name: str | None = None,
    options: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
) -> Executable:
    """Lower `graph` and package it with its weights, memory plan and report."""
    program = lower(graph)
    header = {
        "model": model_name or (report or {}).get("model") or graph.name,
        "soc_version": soc_version,
        "options": dict(sorted((options or {}).items())),
        "program": program.to_json(),
        "memory": program.memory,
        "report": report if report is not None else default_report(graph, program, soc_version),
    }
    exe = Executable(header, dict(program.weights))
    try:  # the loader's checks, on the header as the loader will read it (the host limit is the runtime's)
        seen = decode_json_value(encode_json_value(header))
    except TypeError:  # not writable as an .om (save says so); an in-memory executable is checked as it is
        seen = header
    try:
        validate_executable(seen, exe.weights, name=f"<{header['model']}>", max_bytes=1 << 62)
    except InvalidOmError as e:
        raise InternalError(f"codegen wrote a program its own loader rejects: {e}") from None
    return exe
