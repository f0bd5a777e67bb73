"""What the quantize pass asks of calibration: the `Calibrator` protocol.

Passes never import `compiler/`, so the pass cannot load ``--calibration_data``
or decide how ranges are measured.  The driver builds a calibrator
(`compiler.calibration.compile_calibrator`) and hands it to the pass as one
object, the `passes.options.PassOptions` field ``calibrator``; the pass asks it
three things:

    cal.ranges(graph)            # {value name: amax} for the graph the pass sees
    cal.samples                  # how many calibration samples `sweep` runs (0: none)
    cal.sweep(graph, names, each)  # run `graph` on them, each(name, array) per value

A calibrator whose `measures_graph` is true measures `ranges` on the graph it is
given, so the pass may change the graph first (equalization) and calibrate
after; one whose ranges were measured already (`Ranges`, or a
`compiler.calibration.CalibrationResult`) is not re-run.

This module also holds what both sides share for running samples: the batching
a model's inputs require (`batches`, `static_batch`), a runner that compiles a
float graph and runs it (`float_runner`), and `synthetic`, the seeded random
samples hand-written IR tests calibrate on (``quantize{bias_samples=64}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from ir.core import Graph, Value
from ir.symbolic import dim_bound, parse_ranges

__all__ = [
    "DEFAULT_BATCH",
    "Calibrator",
    "Each",
    "Ranges",
    "Runner",
    "RunnerFactory",
    "as_calibrator",
    "batches",
    "float_runner",
    "mse_amax",
    "static_batch",
    "sweep_batches",
    "synthetic",
]

DEFAULT_BATCH = 32

# a runner takes feeds and returns the requested values by name
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# a runner factory compiles a graph with the named values as outputs
RunnerFactory = Callable[[Graph, Sequence[str]], Runner]
# called once a batch for every value a sweep asked for
Each = Callable[[str, np.ndarray], None]


@runtime_checkable
class Calibrator(Protocol):
    """Activation ranges and the samples they come from, as the quantize pass sees them."""

    # True: `ranges` measures the graph it is given (the pass may rewrite it first)
    measures_graph: ClassVar[bool]

    @property
    def samples(self) -> int:
        """How many calibration samples `sweep` runs over (0: it has none)."""
        ...

    def ranges(self, graph: Graph) -> Mapping[str, float]:
        """``{value name: amax}`` for the activations of `graph` that have one."""
        ...

    def sweep(self, graph: Graph, names: Sequence[str], each: Each) -> None:
        """Run `graph` (the float model or a partly quantized one: same inputs) on the
        calibration samples, calling ``each(name, array)`` for every value in `names`."""
        ...


def mse_amax(counts: np.ndarray, hi: float, levels: int = 127, candidates: int = 256,
             lowest: float = 0.02, bins: int = 4096) -> float:
    """The clipping threshold whose symmetric int8 quantize-dequantize loses least
    (mean squared error) on a histogram of ``|x|``: `counts` in equal bins over
    ``[0, hi]`` (exact zeros left out: they cost nothing at any threshold).

    Why a search and not a percentile: the best clip depends on the tensor.  A
    percentile clips every tensor's tail by the same mass, which is too much
    where the tail carries the signal (an SE gate, a classifier's logits) and too
    little where one outlier stretches the grid (post-ReLU6/HardSwish, depthwise
    outputs); max never clips.  Minimizing the round-trip error per tensor, as
    AMCT's IFMR does over a range below the max, picks each one's own trade of
    clipping error against rounding error.

    Candidates are `candidates` thresholds spaced evenly from ``lowest * hi`` to
    ``hi`` (the max is always one, so the chosen error never exceeds max's).
    Each bin's values are taken at its centre and rounded exactly on the
    candidate's grid (``scale = T / levels``), clipped beyond ``T``; one
    (candidates x bins) array, no loop over elements.  Ties go to the larger
    threshold."""
    c = np.asarray(counts, np.float64)
    if hi <= 0 or c.sum() == 0:
        return 0.0
    merge = max(1, len(c) // bins)
    c = c[: len(c) // merge * merge].reshape(-1, merge).sum(axis=1)
    centre = (np.arange(len(c)) + 0.5) * (hi / len(c))
    keep = c > 0
    c, centre = c[keep], centre[keep]
    t = np.linspace(lowest * hi, hi, candidates)[:, None]
    s = t / levels
    q = np.minimum(np.round(centre[None, :] / s), levels) * s
    err = ((centre[None, :] - q) ** 2) @ c
    best = err.min()
    i = int(np.nonzero(err <= best * (1 + 1e-9))[0][-1])
    return float(t[i, 0])


def static_batch(inputs: Sequence[Value]) -> int | None:
    """The batch dimension the model's inputs fix, or None when it is symbolic."""
    static = [v.type.shape[0] for v in inputs if v.type.rank and isinstance(v.type.shape[0], int)]
    return int(static[0]) if static else None


def batches(data: Mapping[str, np.ndarray], inputs: Sequence[Value], batch_size: int,
            ranges: Mapping[str, tuple[int, int]] | None = None) -> list[dict[str, np.ndarray]]:
    """Feeds of the batch size the model takes: its static batch dimension when it
    has one (the tail is padded by wrapping round), else `batch_size`, at most the
    bound of a symbolic batch dim (`ranges`, the graph's ``dim_ranges``)."""
    n = next(iter(data.values())).shape[0]
    static = static_batch(inputs)
    b = static or batch_size
    bounds = [dim_bound(v.type.shape[0], ranges) for v in inputs if v.type.rank and ranges]
    if not static and any(x is not None for x in bounds):
        b = max(1, min([b] + [x for x in bounds if x is not None]))
    out = []
    for s in range(0, n, b):
        idx = np.arange(s, min(s + b, n))
        if static and len(idx) < b:
            idx = np.arange(s, s + b) % n
        out.append({k: a[idx] for k, a in data.items()})
    return out


def float_runner(graph: Graph, names: Sequence[str]) -> Runner:
    """Compile a copy of `graph` whose outputs are `names` and return a runner for it
    (graph inputs among `names` are returned from the feeds)."""
    # imported here: only a calibration sweep needs the backend
    from codegen import build_executable
    from runtime import Session

    g = graph.clone()
    inputs = {v.name for v in g.inputs}
    computed = [n for n in dict.fromkeys(names) if n not in inputs]
    g.outputs = [g.value(n) for n in computed]
    g.erase_dead()
    session = Session(build_executable(g, model_name=f"{graph.name}-calibration")) if computed else None

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = dict(zip(computed, session.run(None, feeds))) if session is not None else {}
        res.update({n: feeds[n] for n in names if n in inputs})
        return res

    return run


def sweep_batches(feeds: Sequence[dict[str, np.ndarray]], runner: RunnerFactory | None, graph: Graph,
                  names: Sequence[str], each: Each) -> None:
    """`Calibrator.sweep` over ready-made batches."""
    if runner is None or not feeds:
        raise ValueError("this calibrator has no samples to run")
    run = runner(graph, names)
    for f in feeds:
        for name, arr in run(f).items():
            each(name, arr)


@dataclass
class Ranges:
    """A `Calibrator` whose ranges are known already (hand-written for tests, or
    measured before the pass ran), with the samples to sweep if any."""

    amax: dict[str, float]
    samples: int = 0
    batches: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False, compare=False)
    runner: RunnerFactory | None = field(default=float_runner, repr=False, compare=False)
    measures_graph: ClassVar[bool] = False

    def ranges(self, graph: Graph) -> Mapping[str, float]:
        return self.amax

    def sweep(self, graph: Graph, names: Sequence[str], each: Each) -> None:
        sweep_batches(self.batches, self.runner, graph, names, each)


def synthetic(graph: Graph, samples: int, amax: float) -> Ranges:
    """`samples` seeded random inputs, uniform in ``±amax`` (symbolic dims taken as
    1), and no ranges: what hand-written IR gives bias correction and GPTQ to measure on."""
    rng = np.random.default_rng(0)
    data = {v.name: rng.uniform(-amax, amax, [samples, *(d if isinstance(d, int) else 1 for d in v.type.shape[1:])])
            .astype(v.type.dtype.numpy) for v in graph.inputs}
    return Ranges({}, samples, batches(data, graph.inputs, DEFAULT_BATCH, parse_ranges(graph.attrs.get("dim_ranges"))))


def as_calibrator(ranges: object) -> Calibrator:
    """Ranges given directly (``PassOptions.calibration``: ``{value name: amax}``, an
    object with ``.amax``, or a `Calibrator` already) as a `Calibrator`."""
    if isinstance(ranges, Calibrator):
        return ranges
    amax = getattr(ranges, "amax", ranges)
    if not isinstance(amax, Mapping):
        raise TypeError(f"calibration ranges must map value names to amax, got {type(ranges).__name__}")
    return Ranges({str(k): float(v) for k, v in amax.items()})
