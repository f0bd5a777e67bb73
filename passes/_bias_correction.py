"""Empirical bias correction for the quantize pass (Nagel et al., 2019, "Data-Free
Quantization Through Weight Equalization and Bias Correction", section 4.2).

Quantizing a layer's weight and rounding its input shifts the mean of its
pre-activation output: ``E[y_float - y_int8] != 0`` per output channel, and a
ReLU or the next layer turns that shift into a real error.  The fix is a
compile-time constant change, so the scheme stays symmetric int8: add the
measured shift to the layer's int32 bias.

    %h = quant.matmul(%x_q, %w_q, %w_bias_q, %w_scale) {act = "relu", ...}
      ==>
    %h = quant.matmul(%x_q, %w_q, %w_bias_c, %w_scale) {act = "relu", ...}
    // w_bias_c = w_bias_q + rint(E[y_float - y_int8] / (x_scale * w_scale))

Both means are exact functions of the *mean input window* of the layer (its
output is linear before the activation): the mean row of ``x`` [K] for a
MatMul, the mean of its im2col windows [C, *kernel] (zero padding included) for
a Conv.  So one sweep of the float model over the calibration samples, keeping
two small vectors per layer, measures everything:

- float side: ``E[W · clip(x, ±amax)] + b``.  The reference is clipped to the
  range calibration chose: clipping is that method's decision (percentile and
  entropy clip outliers on purpose), and "correcting" it would let a few
  outliers in the calibration set move every bias — with 0.1% of the inputs
  x100 that cost 5 points of top-1 on the digits MLP;
- int8 side: ``x_scale · w_scale · (W_q · E[quantize(x)] + b_q)``.

Each layer's correction covers its own quantization error only (its float input
on both sides), so the layers are independent and need no re-runs of the
quantized model; measured on the digits models, feeding the int8 side the
quantized model's own inputs changed the output cosine by < 1e-5 and made the
outlier case worse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir.core import Graph, Op
from ir.ops.quant import INT_CUBE_KINDS
from runtime.kernels.quant import conv_windows, quantize, scale_from_amax

__all__ = ["Layer", "Sweep", "correct_biases", "expected_output", "measure", "window_sum"]

# sweep(graph, value names, each(name, array)): run `graph` on the calibration samples
Sweep = Callable[[Graph, Sequence[str], Callable[[str, np.ndarray], None]], None]
INT32 = np.iinfo(np.int32)


@dataclass
class Layer:
    """One Cube op to quantize and what its correction needs."""

    name: str  # its result (the integer op keeps the float op's result name)
    conv: bool
    attrs: dict[str, Any]  # Conv geometry
    x: str  # its float input activation
    amax: float  # the input's calibrated range
    weight: np.ndarray  # the float weight: [K, N] (matmul) or [M, C/group, *k] (conv)
    bias: np.ndarray | None  # the float bias [channels]
    float_mean: np.ndarray | None = field(default=None, repr=False)  # E[y_float] before the activation
    int_window: np.ndarray | None = field(default=None, repr=False)  # E[quantize(x)] window
    # anything else that wants the clipped input on the same sweep (GPTQ's Hessian): .add(x)
    observer: Any = field(default=None, repr=False)


def window_sum(x: np.ndarray, layer: Layer) -> tuple[np.ndarray, int]:
    """Sum of the layer's input windows over a batch (and how many were summed):
    rows of ``x`` [K] for a MatMul, im2col windows [C, *kernel] for a Conv."""
    if not layer.conv:
        rows = x.reshape(-1, x.shape[-1])
        return rows.sum(axis=0, dtype=np.float64), rows.shape[0]
    cols = conv_windows(x, layer.attrs, layer.weight.shape[2:])  # N, C, *out, *k
    axes = (0, *range(2, x.ndim))
    return cols.sum(axis=axes, dtype=np.float64), int(np.prod([cols.shape[a] for a in axes]))


def expected_output(weight: np.ndarray, mean_window: np.ndarray, layer: Layer) -> np.ndarray:
    """``E[x @ W]`` (or ``E[Conv(x, W)]``) per output channel from the mean input window."""
    w = weight.astype(np.float64)
    if not layer.conv:
        return mean_window @ w
    group = int(layer.attrs.get("group", 1) or 1)
    mg, cg = w.shape[0] // group, w.shape[1]
    return np.concatenate([w[g * mg:(g + 1) * mg].reshape(mg, -1) @ mean_window[g * cg:(g + 1) * cg].reshape(-1)
                           for g in range(group)])


def measure(graph: Graph, layers: Sequence[Layer], sweep: Sweep) -> None:
    """One sweep of the float `graph`: each layer's ``float_mean`` and ``int_window``."""
    by_input: dict[str, list[Layer]] = {}
    for layer in layers:
        by_input.setdefault(layer.x, []).append(layer)
    sums: dict[int, list[Any]] = {id(layer): [0.0, 0.0, 0] for layer in layers}

    def each(name: str, arr: np.ndarray) -> None:
        for layer in by_input.get(name, ()):
            x = np.asarray(arr, np.float32)
            clipped = np.clip(x, -layer.amax, layer.amax)
            f, n = window_sum(clipped, layer)
            if layer.observer is not None:
                layer.observer.add(clipped)
            q, _ = window_sum(quantize(x, scale_from_amax(layer.amax)), layer)
            acc = sums[id(layer)]
            acc[0], acc[1], acc[2] = acc[0] + f, acc[1] + q, acc[2] + n

    sweep(graph, list(by_input), each)
    for layer in layers:
        f, q, n = sums[id(layer)]
        if n == 0:
            continue
        y = expected_output(layer.weight, f / n, layer)
        layer.float_mean = y if layer.bias is None else y + layer.bias.astype(np.float64)
        layer.int_window = q / n


def _set_bias(graph: Graph, op: Op, bias: np.ndarray) -> None:
    old = op.operands[2]
    wname = op.operands[1].name  # type: ignore[union-attr]
    op.set_operand(2, graph.const(bias.astype(np.int32), f"{wname.removesuffix('_q')}_bias_c"))
    if old is not None and old.producer is not None and not old.uses:
        graph.erase(old.producer)


def correct_biases(graph: Graph, layers: Sequence[Layer]) -> int:
    """Add ``E[y_float - y_int8]`` to the int32 bias of each measured layer of the
    quantized `graph`; returns how many biases changed."""
    ops = {op.results[0].name: op for op in graph.ops if op.kind in INT_CUBE_KINDS}
    changed = 0
    for layer in layers:
        op = ops.get(layer.name)
        if op is None or layer.float_mean is None or layer.int_window is None:
            continue
        ws = op.operand_const(3).astype(np.float64).reshape(-1)
        mult = float(op.attrs["x_scale"]) * ws
        bq = op.operand_const(2).reshape(-1) if op.operands[2] is not None else np.zeros(ws.size, np.int32)
        got = mult * (expected_output(op.operand_const(1), layer.int_window, layer) + bq)
        step = np.rint((layer.float_mean - got) / mult)
        if not np.any(step):
            continue
        _set_bias(graph, op, np.clip(bq.astype(np.int64) + step.astype(np.int64), INT32.min, INT32.max))
        changed += 1
    return changed
