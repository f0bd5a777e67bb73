"""INT8 calibration: activation ranges from running the float model on sample data.

    data = load_calibration_data("calib.npz", graph.inputs)      # {input: [S, ...]}
    result = calibrate(graph, data, method="percentile")           # CalibrationResult
    result.amax                                                    # {value name: amax}

`calibrate` finds every activation feeding a Cube op the quantize pass can
quantize, compiles a float executable whose outputs are those activations (the
graph is cloned and its outputs replaced, so nothing is kept alive that the
model does not need), and runs the samples through atcpy's own runtime in
batches.  Methods:

- ``max``: the largest ``|x|`` seen;
- ``percentile``: the ``p``-th percentile of ``|x|`` (default 99.9) from a
  histogram, so a few outliers do not stretch the scale;
- ``entropy``: the clipping threshold whose 128-level quantized distribution is
  closest (KL divergence) to the observed one, TensorRT's method (2048 bins,
  candidates from 128 bins up; exact zeros left out, see `entropy_amax`).

Histogram methods run twice over the data: once for each tensor's range, once to
fill a fixed-range histogram (`NBINS` bins over ``[0, max|x|]``).

In a compile calibration is deferred: `compile_calibrator` (called by the
driver) loads and checks the data up front and returns a `SampleCalibrator`,
the `passes.calibrator.Calibrator` the quantize pass is handed.  The pass asks it
for ranges on the graph *it* sees (after canonicalize/fuse, and after
equalization when that is on), so the value names it looks up are exactly the
ones it quantizes; which activations those are is the pass's own
`passes.quantize.quantizable`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from compiler.calibration_data import load_calibration_data
from ir.core import Graph
from ir.errors import UsageError
from ir.symbolic import parse_ranges
from passes.calibrator import (
    DEFAULT_BATCH,
    Each,
    Ranges,
    Runner,
    RunnerFactory,
    batches,
    float_runner,
    mse_amax,
    static_batch,
    sweep_batches,
)
from passes.quantize import parse_keep_dtype, quantizable

__all__ = [
    "DEFAULT_BATCH",
    "KL_BINS",
    "METHODS",
    "NBINS",
    "CalibrationResult",
    "Histogram",
    "Runner",
    "RunnerFactory",
    "SampleCalibrator",
    "amax_from_histogram",
    "batches",
    "calibrate",
    "calibration_targets",
    "check_calibration_options",
    "compile_calibrator",
    "entropy_amax",
    "fingerprint",
    "float_runner",
    "load_calibration_data",
    "mse_amax",
    "percentile_amax",
    "static_batch",
]

METHODS = ("mse", "max", "percentile", "entropy")
NBINS = 16384  # the collected histogram (fine enough for percentiles)
KL_BINS = 2048  # the entropy method's histogram, TensorRT's size
LEVELS = 128  # |q| in 0..127


@dataclass
class CalibrationResult(Ranges):
    """Ranges measured by `calibrate`, with how they were chosen: a
    `passes.calibrator.Calibrator` with fixed ranges (the quantize pass does not
    re-measure them) that keeps the calibration batches and how to run a graph on
    them, so the pass can measure its own error on the same data (bias correction, GPTQ)."""

    runner: RunnerFactory | None = field(default=None, repr=False, compare=False)
    method: str = ""
    percentile: float | None = None
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # per tensor: max, chosen amax


# --- statistics ------------------------------------------------------------------------------
@dataclass
class Histogram:
    """Counts of ``|x|`` in `NBINS` equal bins over ``[0, hi]``; exact zeros are
    counted apart (`zeros`): they quantize exactly at any scale."""

    hi: float
    counts: np.ndarray = field(default_factory=lambda: np.zeros(NBINS, np.int64))
    zeros: int = 0

    def add(self, x: np.ndarray) -> None:
        a = np.abs(np.asarray(x, np.float32)).ravel()
        nz = a[a != 0]
        self.zeros += a.size - nz.size
        if self.hi <= 0:
            self.counts[0] += nz.size
            return
        idx = np.minimum((nz * (NBINS / self.hi)).astype(np.int64), NBINS - 1)
        self.counts += np.bincount(idx, minlength=NBINS)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.hi, NBINS + 1)


def percentile_amax(h: Histogram, p: float) -> float:
    counts = h.counts.copy()
    counts[0] += h.zeros
    cdf = np.cumsum(counts)
    total = cdf[-1]
    if total == 0 or h.hi <= 0:
        return 0.0
    i = int(np.searchsorted(cdf, total * p / 100.0))
    return float(h.edges[min(i, NBINS - 1) + 1])


def _kl_divergences(counts: np.ndarray, candidates: np.ndarray, levels: int) -> np.ndarray:
    """KL(P || Q) for each candidate threshold (a bin count ``i``): P is the first
    ``i`` bins with everything above folded into bin ``i - 1``; Q merges those
    ``i`` bins (without the fold) into `levels` equal groups and spreads each
    group's count evenly over its non-empty bins (an empty bin stays empty)."""
    out = np.empty(len(candidates))
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    cum_nz = np.concatenate([[0], np.cumsum(counts > 0)])
    total = cum[-1]
    for j, i in enumerate(candidates):
        # group g holds bins [lo[g], lo[g + 1]); its sums come from the prefix sums
        lo = (np.arange(levels + 1) * i) // levels
        mass = cum[lo[1:]] - cum[lo[:-1]]
        filled = cum_nz[lo[1:]] - cum_nz[lo[:-1]]
        per_bin = np.repeat(mass / np.maximum(filled, 1), np.diff(lo))
        p = counts[:i].copy()
        p[-1] += total - cum[i]
        q = np.where(counts[:i] > 0, per_bin, 0.0)
        m = p > 0
        ps = p[m] / total
        # P mass where Q has none (the folded tail over an empty last bin): smoothed, not infinite
        qs = np.maximum(q[m] / max(cum[i], 1e-300), 1e-12)
        out[j] = float(np.sum(ps * np.log(ps / qs)))
    return out


def entropy_amax(h: Histogram, levels: int = LEVELS, bins: int = KL_BINS) -> float:
    """TensorRT's KL calibration: the histogram is merged into `bins` (2048) bins;
    every threshold from ``levels`` bins up to the last non-empty one is a
    candidate, and the one whose `levels`-level quantized distribution is closest
    to the observed one (least KL divergence, `_kl_divergences`) wins.

    Exact zeros (a ReLU's output is half zeros) are left out: they quantize
    exactly whatever the threshold, yet as a spike in the first bin they would
    make every wide first group look bad and pull the threshold down.  Ties go to
    the larger threshold (a spiky, discrete distribution such as raw pixel values
    has KL = 0 both for a tiny threshold and for none at all; clipping less is
    the one that keeps the data)."""
    counts = h.counts.astype(np.float64)
    if counts.sum() == 0 or h.hi <= 0:
        return 0.0
    merge = max(1, len(counts) // bins)
    counts = counts[: len(counts) // merge * merge].reshape(-1, merge).sum(axis=1)
    width = h.hi / len(counts)
    last = int(np.nonzero(counts)[0][-1]) + 1  # thresholds past the last non-empty bin all clip nothing
    if last <= levels:
        return float(last * width)
    candidates = np.arange(levels, last + 1)
    kl = _kl_divergences(counts, candidates, levels)
    best = kl.min()
    i = candidates[np.nonzero(kl <= best + 1e-12 * max(1.0, abs(best)))[0][-1]]
    return float(i * width)


def amax_from_histogram(h: Histogram, method: str, percentile: float = 99.9) -> float:
    if method == "percentile":
        return percentile_amax(h, percentile)
    if method == "entropy":
        return entropy_amax(h)
    if method == "mse":
        return mse_amax(h.counts, h.hi)
    raise ValueError(method)


# --- running the float model -------------------------------------------------------------------
def calibration_targets(graph: Graph, keep_dtype: Any = None) -> list[str]:
    """Names of the activations feeding Cube ops the quantize pass would quantize."""
    keep = parse_keep_dtype(keep_dtype)
    names: list[str] = []
    for op in graph.ops:
        if quantizable(op, keep):
            n = op.operands[0].name  # type: ignore[union-attr]
            if n not in names:
                names.append(n)
    return names


class _Progress:
    """A plain stderr progress bar (redrawn in place on a terminal, one final line otherwise)."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.tty = enabled and sys.stderr.isatty()

    def update(self, done: int) -> None:
        if not self.enabled or (not self.tty and done < self.total):
            return
        width = 30
        fill = int(width * done / max(self.total, 1))
        end = "\n" if done >= self.total else ""
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} batches{end}")
        sys.stderr.flush()


def _sweep(run: Runner, batches: list[dict[str, np.ndarray]], label: str, progress: bool,
           each: Callable[[str, np.ndarray], None]) -> None:
    bar = _Progress(len(batches), label, progress)
    bar.update(0)
    for i, feeds in enumerate(batches, 1):
        for name, arr in run(feeds).items():
            each(name, arr)
        bar.update(i)


def calibrate(
    graph: Graph,
    data: Mapping[str, np.ndarray],
    method: str = "mse",
    percentile: float = 99.9,
    *,
    batch_size: int = DEFAULT_BATCH,
    keep_dtype: Any = None,
    progress: bool = False,
    runner: RunnerFactory = float_runner,
    names: Iterable[str] | None = None,
) -> CalibrationResult:
    """Activation ranges (amax) for every quantizable Cube op input of `graph`."""
    if method not in METHODS:
        raise UsageError(f"unknown --calibration_method={method}; choose {', '.join(METHODS)}")
    targets = list(names) if names is not None else calibration_targets(graph, keep_dtype)
    n = next(iter(data.values())).shape[0] if data else 0
    pct = percentile if method == "percentile" else None
    feeds = batches(data, graph.inputs, batch_size, parse_ranges(graph.attrs.get("dim_ranges"))) if n else []
    if not targets:
        return CalibrationResult({}, n, feeds, runner, method=method, percentile=pct)
    run = runner(graph, targets)
    hi: dict[str, float] = dict.fromkeys(targets, 0.0)

    def track_max(name: str, a: np.ndarray) -> None:
        if name in hi and a.size:
            hi[name] = max(hi[name], float(np.max(np.abs(a))))

    _sweep(run, feeds, "calibrating (ranges)" if method != "max" else "calibrating", progress, track_max)
    stats = {k: {"max": v} for k, v in hi.items()}
    if method == "max":
        amax = dict(hi)
    else:
        hists = {k: Histogram(v) for k, v in hi.items()}

        def fill(name: str, a: np.ndarray) -> None:
            if name in hists:
                hists[name].add(a)

        _sweep(run, feeds, f"calibrating ({method})", progress, fill)
        amax = {k: amax_from_histogram(h, method, percentile) for k, h in hists.items()}
    for k, v in amax.items():
        stats[k]["amax"] = v
    return CalibrationResult(amax, n, feeds, runner, method=method, percentile=pct, stats=stats)


# --- compile integration ----------------------------------------------------------------------
# the last compile's calibration, reused by a compile of the same graph from the same
# samples in this process (``--accuracy_report`` when it has too few samples to hold any
# back; otherwise it calibrates on fewer samples, so again)
_LAST: dict[tuple, CalibrationResult] = {}


def fingerprint(graph: Graph, data: Mapping[str, np.ndarray]) -> str:
    """A digest of `graph` (ops, names, types, attributes and constant values) and
    of the calibration samples: equal digests give equal calibration results."""
    h = hashlib.sha256()

    def put(x: Any) -> None:
        h.update(np.ascontiguousarray(x).tobytes() if isinstance(x, np.ndarray) else repr(x).encode())

    put([(v.name, str(v.type)) for v in graph.inputs])
    for op in graph.ops:
        put((op.kind, [None if o is None else o.name for o in op.operands],
             [(r.name, str(r.type)) for r in op.results]))
        for k in sorted(op.attrs):
            put(k)
            put(op.attrs[k])
    for k in sorted(data):
        put((k, data[k].dtype.str, data[k].shape))
        put(data[k])
    return h.hexdigest()


@dataclass
class SampleCalibrator:
    """The compile's `passes.calibrator.Calibrator`: ranges measured by `calibrate`
    on whatever graph the quantize pass asks about, from samples loaded up front."""

    data: Mapping[str, np.ndarray] = field(repr=False)
    feeds: list[dict[str, np.ndarray]] = field(repr=False)  # `data` in the model's batches
    method: str = "mse"
    percentile: float = 99.9
    batch_size: int = DEFAULT_BATCH
    keep_dtype: Any = None
    progress: bool = True
    runner: RunnerFactory = field(default=float_runner, repr=False)
    measures_graph: ClassVar[bool] = True

    @property
    def samples(self) -> int:
        return int(next(iter(self.data.values())).shape[0]) if self.data else 0

    def ranges(self, graph: Graph) -> Mapping[str, float]:
        key = (fingerprint(graph, self.data), self.method, self.percentile, self.batch_size, repr(self.keep_dtype))
        # the same graph and samples as the last compile (a report with too few samples to hold any back): reuse
        res = _LAST.get(key)
        if res is None:
            res = calibrate(graph, self.data, self.method, self.percentile, batch_size=self.batch_size,
                            keep_dtype=self.keep_dtype, progress=self.progress, runner=self.runner)
            _LAST.clear()
            _LAST[key] = res
        return res.amax

    def sweep(self, graph: Graph, names: Sequence[str], each: Each) -> None:
        sweep_batches(self.feeds, self.runner, graph, names, each)


def check_calibration_options(opts: Any) -> None:
    """The usage errors of ``--precision_mode=allow_quantize``, before any file is read."""
    if not opts.calibration_data:
        raise UsageError("--precision_mode=allow_quantize needs --calibration_data=FILE.npz|DIR "
                         "(sample inputs to measure activation ranges on)")
    if opts.calibration_method not in METHODS:
        raise UsageError(f"unknown --calibration_method={opts.calibration_method}; choose {', '.join(METHODS)}")


def compile_calibrator(graph: Graph, opts: Any, data: Mapping[str, np.ndarray] | None = None) -> SampleCalibrator:
    """The calibrator a compile hands the quantize pass (`opts`: `CompileOptions`):
    ``--calibration_data`` is loaded and checked against `graph`'s inputs now, so
    its errors come before any pass runs; ranges are measured when the pass asks.
    `data`, when given, are the samples to calibrate on instead (the accuracy
    report's calibration split)."""
    check_calibration_options(opts)
    if data is None:
        data = load_calibration_data(opts.calibration_data, graph.inputs)
    batch_size = int(opts.calibration_batch_size)
    return SampleCalibrator(data, batches(data, graph.inputs, batch_size, parse_ranges(graph.attrs.get("dim_ranges"))),
                            opts.calibration_method,
                            opts.calibration_percentile, batch_size, opts.keep_dtype,
                            bool(opts.progress))
