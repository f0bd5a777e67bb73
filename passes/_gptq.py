"""GPTQ weight rounding for the quantize pass (Frantar et al., 2022, "GPTQ:
Accurate Post-Training Quantization for Generative Pre-trained Transformers",
itself OBQ's fast form), on atcpy's fixed grid.

Plain rounding picks each int8 weight nearest to its float value, one weight at
a time.  What matters is the layer's output on real inputs, ``W x``: with the
calibration inputs' second moment ``H = E[x xᵀ]`` (im2col windows for a Conv)
the output error of a weight row ``w`` quantized to ``q`` is
``(w - q) H (w - q)ᵀ``.  GPTQ quantizes the input columns one at a time and
spreads each column's rounding error over the columns not yet quantized, in
the proportions ``H⁻¹`` says cancel it best:

    for j in columns (largest H[j, j] first):
        q[:, j] = clip(rint(w[:, j] / s), -127, 127) * s
        w[:, j+1:] -= (w[:, j] - q[:, j]) / U[j, j] * U[j, j+1:]     # U: upper Cholesky of H⁻¹

The grid does not move: the scale is still ``amax / 127`` of the float row
(per output channel) and every code is clipped to [-127, 127], so the scheme
and the runtime are unchanged — only which of the two neighbouring codes a
weight gets (or, rarely, one further away) differs.  Two guards make the result
never worse than plain rounding on the calibration data, row by row: a row
keeps its plain rounding if GPTQ's output error on ``H`` is not smaller; and a
weight that is exactly zero (pruned) stays zero — it is never handed error.

`Hessian` accumulates ``Σ x xᵀ`` over the layer's inputs during the calibration
sweep bias correction already runs (the inputs clipped to the calibrated range,
as the integer layer sees them); a layer whose ``K`` exceeds ``max_columns`` is
left to plain rounding (``H`` is ``K x K``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from runtime.kernels.quant import QMAX, conv_windows

__all__ = ["Hessian", "gptq_rows", "layer_error", "round_rows"]

MAX_ROWS = 8192  # input rows a batch adds to H at most (an evenly spaced subset beyond that)


@dataclass
class Hessian:
    """``Σ x xᵀ`` of a layer's input rows, one ``[K, K]`` block per conv group."""

    conv: bool
    attrs: dict
    kernel: tuple[int, ...]
    group: int = 1
    blocks: list[np.ndarray] = field(default_factory=list)
    sums: list[np.ndarray] = field(default_factory=list)
    rows: int = 0

    def add(self, x: np.ndarray) -> None:
        rows = self._rows(np.asarray(x, np.float32))
        if len(rows) > MAX_ROWS:  # big feature maps: a deterministic, evenly spread subset
            rows = rows[np.linspace(0, len(rows) - 1, MAX_ROWS).astype(np.int64)]
        k = rows.shape[1] // self.group
        parts = [rows[:, g * k:(g + 1) * k].astype(np.float64) for g in range(self.group)]
        if not self.blocks:
            self.blocks = [np.zeros((k, k)) for _ in range(self.group)]
            self.sums = [np.zeros(k) for _ in range(self.group)]
        for b, t, p in zip(self.blocks, self.sums, parts):
            b += p.T @ p
            t += p.sum(axis=0)
        self.rows += len(rows)

    def matrix(self, g: int, centered: bool) -> np.ndarray:
        """Group `g`'s ``Σ x xᵀ``, or with `centered` ``Σ (x - x̄)(x - x̄)ᵀ``: the error
        left once bias correction has taken out the mean (it runs after GPTQ)."""
        if not centered or not self.rows:
            return self.blocks[g]
        t = self.sums[g]
        return self.blocks[g] - np.outer(t, t) / self.rows

    def _rows(self, x: np.ndarray) -> np.ndarray:
        if not self.conv:
            return x.reshape(-1, x.shape[-1])
        cols = conv_windows(x, self.attrs, self.kernel)  # N, C, *out, *k
        nsp = len(self.kernel)
        perm = (0, *range(2, 2 + nsp), 1, *range(2 + nsp, 2 + 2 * nsp))
        return cols.transpose(perm).reshape(-1, int(np.prod(cols.shape[1:2]) * np.prod(self.kernel)))


def round_rows(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Plain rounding of weight rows ``[N, K]`` (one scale a row) to int8 codes, in
    float32 exactly as `runtime.kernels.quant.quantize` rounds (ties included)."""
    q = np.rint(np.asarray(w, np.float32) / np.asarray(scale, np.float32).reshape(-1, 1))
    return np.clip(q, -QMAX, QMAX).astype(np.float64)


def layer_error(w: np.ndarray, codes: np.ndarray, scale: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Per row: ``(w - q) H (w - q)ᵀ``, the summed squared output error on the inputs of `h`."""
    d = w.astype(np.float64) - codes * scale[:, None].astype(np.float64)
    return ((d @ h) * d).sum(axis=1)  # one BLAS product (an unoptimized 3-operand einsum is ~50x slower)


def gptq_rows(w: np.ndarray, scale: np.ndarray, h: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """GPTQ codes (float64 integers in [-127, 127]) for weight rows `w` [N, K] with
    per-row `scale` [N], given ``H = Σ x xᵀ`` [K, K] of the inputs."""
    w = np.asarray(w, np.float64)
    s = np.asarray(scale, np.float64).reshape(-1)
    plain = round_rows(w, s)
    k = w.shape[1]
    diag = np.diag(h).copy()
    if k == 0 or not np.any(diag > 0):
        return plain
    hd = np.array(h, np.float64)
    # dead inputs (always zero) get a unit diagonal: decoupled, they are just rounded
    dead = diag <= 0
    hd[dead, dead] = 1.0
    # columns with the most input energy first (GPTQ's "act order"), then damping for a stable inverse
    order = np.argsort(-np.diag(hd), kind="stable")
    hd = hd[np.ix_(order, order)]
    hd[np.diag_indices(k)] += damp * float(np.mean(np.diag(hd)))
    try:
        u = np.linalg.cholesky(np.linalg.inv(hd)).T
    except np.linalg.LinAlgError:
        return plain
    work = w[:, order].copy()
    live = work != 0  # exactly zero weights stay zero and take no error
    codes = np.zeros_like(work)
    for j in range(k):
        c = np.clip(np.rint(work[:, j] / s), -QMAX, QMAX)
        codes[:, j] = c
        err = (work[:, j] - c * s) / u[j, j]
        work[:, j + 1:] -= np.outer(err, u[j, j + 1:]) * live[:, j + 1:]
    codes = codes[:, np.argsort(order)]
    # never worse than plain rounding on the calibration inputs, row by row
    worse = layer_error(w, codes, s, h) >= layer_error(w, plain, s, h)
    codes[worse] = plain[worse]
    return codes
