"""``--calibration_data`` on disk: sample inputs for calibration, checked against the model.

    data = load_calibration_data("calib.npz", graph.inputs)   # {input name: [S, ...]}

An ``.npz`` holds one array per model input (first axis = samples); a directory
holds ``.npy``/``.bin`` files (ATC style).  Every error names the file, the input
and the shape it expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ir.core import Value
from ir.errors import UsageError
from ir.types import TensorType
from runtime.errors import InputError
from runtime.npyio import load_npy, load_npz
from runtime.validate import host_limit

__all__ = ["load_calibration_data"]


def _as_batch(a: np.ndarray, t: TensorType, name: str, src: str) -> np.ndarray:
    """`a` as ``[S, *sample_shape]`` in the input's dtype (a single sample gets S = 1)."""
    a = np.asarray(a)
    rank = t.rank
    if a.ndim == rank - 1:
        a = a[None]
    if a.ndim != rank:
        raise UsageError(f"calibration data {src}: input {name!r} has rank {rank} ({t}), "
                         f"got an array of shape {a.shape}")
    for i, (want, got) in enumerate(zip(t.shape[1:], a.shape[1:]), 1):
        if isinstance(want, int) and want != got:
            raise UsageError(f"calibration data {src}: input {name!r} expects {t}, got samples of shape {a.shape[1:]} "
                             f"(dimension {i} is {got}, not {want})")
    return a.astype(t.dtype.numpy, copy=False)


def _untrusted(load, *args):
    """`runtime.npyio`'s header-checked readers, their errors as usage errors of the flag."""
    try:
        return load(*args)
    except InputError as e:
        raise UsageError(f"--calibration_data: {e}") from None


def _read_file(p: Path, t: TensorType, name: str) -> np.ndarray:
    if p.suffix == ".npy":
        return _as_batch(_untrusted(load_npy, p, None, host_limit()), t, name, str(p))
    if p.suffix == ".bin":
        tail = t.shape[1:]
        if not all(isinstance(d, int) for d in tail):
            raise UsageError(f"calibration data {p}: a raw .bin needs a static sample shape; input {name!r} is {t}")
        raw = np.fromfile(p, dtype=t.dtype.numpy)
        per = int(np.prod(tail, dtype=np.int64)) if tail else 1
        if raw.size % per:
            raise UsageError(f"calibration data {p}: {raw.size} values is not a whole number of {t} samples")
        return raw.reshape((-1, *tail))
    raise UsageError(f"calibration data {p}: expected .npy or .bin")


def load_calibration_data(path: str | Path, inputs: Sequence[Value]) -> dict[str, np.ndarray]:
    """Read ``--calibration_data``: an ``.npz`` with one array per model input (first
    axis = samples), or a directory of ``.npy``/``.bin`` files (ATC style; one file a
    batch or a sample; for several inputs, a sub-directory per input name or files
    named ``<input>*``).  Returns ``{input name: [S, ...]}``."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--calibration_data: {p} does not exist")
    out: dict[str, np.ndarray] = {}
    if p.is_file():
        if p.suffix != ".npz":
            if len(inputs) == 1:
                out[inputs[0].name] = _read_file(p, inputs[0].type, inputs[0].name)
                return out
            raise UsageError(f"--calibration_data: {p} must be an .npz (one array per input) for a model with "
                             f"{len(inputs)} inputs")
        z = _untrusted(load_npz, p, lambda key: None, host_limit())  # headers checked before inflating
        keys = list(z)
        for v in inputs:
            if v.name in keys:
                out[v.name] = _as_batch(z[v.name], v.type, v.name, str(p))
            elif len(inputs) == 1 and len(keys) == 1:
                out[v.name] = _as_batch(z[keys[0]], v.type, v.name, str(p))
        missing = [v.name for v in inputs if v.name not in out]
        if missing:
            raise UsageError(f"--calibration_data {p}: no array for input(s) {', '.join(missing)}; "
                             f"the file has {', '.join(keys) or 'no arrays'}")
    else:
        files = sorted(f for f in p.rglob("*") if f.suffix in (".npy", ".bin"))
        for v in inputs:
            if len(inputs) == 1:
                mine = files
            else:
                mine = [f for f in files if f.parent.name == v.name or f.name.startswith(v.name)]
            if not mine:
                raise UsageError(f"--calibration_data {p}: no .npy/.bin files for input {v.name!r}")
            out[v.name] = np.concatenate([_read_file(f, v.type, v.name) for f in mine])
    counts = {k: a.shape[0] for k, a in out.items()}
    if len(set(counts.values())) > 1:
        raise UsageError(f"--calibration_data: inputs have different sample counts: {counts}")
    if min(counts.values(), default=0) == 0:
        raise UsageError("--calibration_data holds no samples")
    return out
