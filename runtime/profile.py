"""Per-step wall times of profiled runs (`Session.run(..., profile=True)`): a table of
the slowest steps and a Chrome trace (chrome://tracing, Perfetto) with one track per
engine."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.om import write_atomic

__all__ = ["Profile", "StepTiming"]


@dataclass
class StepTiming:
    index: int
    kernel: str
    engine: str
    name: str
    seconds: float
    start: float
    cost_cycles: float | None = None


@dataclass
class Profile:
    """Per-step wall times of the last profiled run(s)."""

    steps: list[StepTiming] = field(default_factory=list)
    runs: int = 0

    def table(self, top: int | None = None) -> str:
        agg: dict[int, StepTiming] = {}
        for t in self.steps:
            if t.index in agg:
                agg[t.index].seconds += t.seconds
            else:
                agg[t.index] = StepTiming(t.index, t.kernel, t.engine, t.name, t.seconds, t.start, t.cost_cycles)
        rows = sorted(agg.values(), key=lambda t: -t.seconds)[:top]
        total = sum(t.seconds for t in agg.values()) or 1e-12
        runs = max(self.runs, 1)
        lines = [f"{'step':>5} {'kernel':<24} {'engine':<7} {'ms/run':>9} {'%':>6}  name"]
        for t in rows:
            lines.append(f"{t.index:>5} {t.kernel[:24]:<24} {t.engine:<7} {t.seconds / runs * 1e3:>9.3f} "
                         f"{100 * t.seconds / total:>6.1f}  {t.name}")
        by_engine: dict[str, float] = {}
        for t in agg.values():
            by_engine[t.engine] = by_engine.get(t.engine, 0.0) + t.seconds
        lines.append("total " + ", ".join(f"{e}={s / runs * 1e3:.3f}ms" for e, s in sorted(by_engine.items()))
                     + f", all={total / runs * 1e3:.3f}ms per run")
        return "\n".join(lines)

    def chrome_trace(self) -> dict[str, Any]:
        engines = sorted({t.engine for t in self.steps})
        events = [{"name": "thread_name", "ph": "M", "pid": 0, "tid": i, "args": {"name": e}}
                  for i, e in enumerate(engines)]
        for t in self.steps:
            args: dict[str, Any] = {"kernel": t.kernel, "step": t.index}
            if t.cost_cycles is not None:
                args["estimated_cycles"] = t.cost_cycles
            events.append({"name": t.name, "cat": t.engine, "ph": "X", "pid": 0, "tid": engines.index(t.engine),
                           "ts": round(t.start * 1e6, 3), "dur": round(t.seconds * 1e6, 3), "args": args})
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def write_chrome_trace(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        write_atomic(path, json.dumps(self.chrome_trace(), indent=1).encode())
        return path
