"""`atcpy-compare`: layer-wise accuracy of an `.om` against onnxruntime, like ATC's msaccucmp.

    atcpy-compare --model=net.onnx --om=net.om --input=x.npy --output=cmp/ [--threshold=0.99]

Runs onnxruntime (one thread) with every intermediate tensor as an output, and the `.om`
with every step's results kept (`Session.run_all`), then pairs each ONNX node with the
step that computes it.  A step's ``_origins`` attribute lists the ONNX nodes it replaced
(`passes._rewrite`: a fused Conv+BatchNorm+Relu lists all three, a quantized op keeps its
float op's list).  Of a step's origins only the one latest in ONNX order has its output in
the `.om` -- the chain's result -- so that node is compared against the step's first
result and the others are reported ``fused into step K``.  A node no step claims is
matched by its output name (``x`` or the ``x_f16`` copy of `cast-precision`); if none,
it is ``not in .om`` (folded at compile time, a view elided, ...).

INT8 results are dequantized with their scale (``y_scale`` of a quantized Cube op, the
``scale`` of ``quant.quantize``, or for a data mover the scale of what it moves); f16
results are widened.  All metrics are float64 over the flattened tensors:

- cosine similarity (1.0 when both are all zeros),
- max absolute error, mean absolute error, RMSE,
- max relative error ``|npu - ref| / max(|ref|, 1e-6)``,
- KL divergence ``KL(ref || npu)`` of the two tensors' value histograms (100 bins over the
  union of their ranges, 1e-10 added to each bin) -- a histogram of the values, not a
  softmax, so it compares distributions as ATC's compare does for activations.

Writes ``DIR/compare.csv`` and ``DIR/compare.json`` (one row per ONNX node, in ONNX order)
and prints the first compared node whose cosine is below ``--threshold`` with its op type
and the cosines of the nodes producing its inputs.  Exit codes as the other tools: 2 usage,
3 bad ONNX model, 4 bad `.om`, 5 bad input, 0 otherwise (a node below the threshold is a
finding, not an error).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NodeResult", "compare", "main", "metrics"]

METRICS = ("cosine", "max_abs", "max_rel", "mean_abs", "rmse", "kl")
_VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
_MOVERS = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat",
                     "Split", "Identity", "Gather", "Pad", "Expand", "Tile", "DepthToSpace", "SpaceToDepth"})


class _Fail(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _UsageError(_Fail):
    def __init__(self, message: str) -> None:
        super().__init__(2, message)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, as the other tools
        raise _Fail(2, message)


@dataclass
class NodeResult:
    """One ONNX node's row of the report."""

    index: int
    node: str
    op_type: str
    output: str
    status: str  # "compared", "fused into step K (kernel)", "not in .om"
    step: int | None = None
    kernel: str = ""
    om_value: str = ""
    inputs: list[str] = field(default_factory=list)
    cosine: float | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    rmse: float | None = None
    kl: float | None = None


def metrics(ref: np.ndarray, npu: np.ndarray) -> dict[str, float]:
    """The six metrics of `npu` against `ref`, in float64 (module docstring)."""
    a = np.asarray(ref, np.float64).ravel()
    b = np.asarray(npu, np.float64).ravel()
    d = np.abs(a - b)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        cos = 1.0
    elif na == 0.0 or nb == 0.0:
        cos = 0.0
    else:
        cos = float(np.dot(a, b) / (na * nb))
    return {
        "cosine": cos,
        "max_abs": float(d.max(initial=0.0)),
        "max_rel": float((d / np.maximum(np.abs(a), 1e-6)).max(initial=0.0)),
        "mean_abs": float(d.mean()) if d.size else 0.0,
        "rmse": float(np.sqrt(np.mean(d * d))) if d.size else 0.0,
        "kl": _kl(a, b),
    }


def _kl(a: np.ndarray, b: np.ndarray, bins: int = 100) -> float:
    """KL(ref || npu) of the value histograms over a common range."""
    if a.size == 0:
        return 0.0
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    if not np.isfinite(lo) or not np.isfinite(hi):
        return float("inf")
    if hi <= lo:
        return 0.0
    p = np.histogram(a, bins, (lo, hi))[0].astype(np.float64) + 1e-10
    q = np.histogram(b, bins, (lo, hi))[0].astype(np.float64) + 1e-10
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


# -- the ONNX side --------------------------------------------------------------------------
def _load_onnx(path: str) -> Any:
    import onnx

    try:
        return onnx.load(path)
    except Exception as e:  # noqa: BLE001 - any failure to parse is a bad model (exit 3)
        raise _Fail(3, f"--model: cannot load {path!r} as ONNX: {type(e).__name__}: {e}") from None


def run_onnx_all(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node output of `model` on `feeds`, from onnxruntime on one thread."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in have:
                m.graph.output.append(onnx.ValueInfoProto(name=o))
                have.add(o)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node's tensor
    try:
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime refusing the model is a bad model (exit 3)
        raise _Fail(3, f"--model: onnxruntime cannot load it: {e}") from None
    names = [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(names, feeds)
    except Exception as e:  # noqa: BLE001 - a feed onnxruntime rejects is a bad input (exit 5)
        raise _Fail(5, f"--input: onnxruntime cannot run the model on it: {e}") from None
    return dict(zip(names, values))


# -- the .om side ---------------------------------------------------------------------------
class _Om:
    """The `.om` program's steps and kept results, addressed by activation."""

    def __init__(self, program: dict[str, Any], kept: dict[str, np.ndarray]) -> None:
        self.steps = program["steps"]
        self.acts = program["activations"]
        self.kept = kept
        self.producer = {a: k for k, st in enumerate(self.steps) for a in st["outputs"]}
        self.by_name = {a["name"]: i for i, a in enumerate(self.acts)}

    def value(self, act: int) -> np.ndarray | None:
        """Activation `act` as float64, dequantized if it is INT8; None if not kept."""
        v = self.kept.get(self.acts[act]["name"])
        if v is None:
            return self.view_of(act)
        if v.dtype.kind in "iu" and self.acts[act]["dtype"] in ("i8", "u8"):
            s = self.scale(act, 0)
            if s is None:
                return None
            return v.astype(np.float64) * s
        return v.astype(np.float64)

    def view_of(self, act: int) -> np.ndarray | None:
        """A view step the Session elided (its result aliases its operand's bytes) never
        ran: its value is its operand's, reshaped."""
        k = self.producer.get(act)
        shape = self.acts[act]["shape"]
        if k is None or self.steps[k]["kernel"] not in _VIEWS or not all(isinstance(d, int) for d in shape):
            return None
        src = self.steps[k]["inputs"][0] if self.steps[k]["inputs"] else None
        if not src or src[0] != "a":
            return None
        v = self.value(src[1])
        return None if v is None or v.size != int(np.prod(shape)) else v.reshape(shape)

    def scale(self, act: int, depth: int) -> float | None:
        k = self.producer.get(act)
        if k is None or depth > 32:
            return None
        st = self.steps[k]
        attrs = st["attrs"]
        for key in ("y_scale", "to_scale", "scale"):
            if isinstance(attrs.get(key), (int, float)):
                return float(attrs[key])
        ins = st["inputs"]
        if st["kernel"] in _MOVERS and ins and ins[0] and ins[0][0] == "a":
            return self.scale(ins[0][1], depth + 1)
        return None

    def claims(self, order: dict[str, int]) -> dict[str, int]:
        """ONNX node key -> the last step listing it among its origins."""
        owner: dict[str, int] = {}
        for k, st in enumerate(self.steps):
            orig = st["attrs"].get("_origins")
            if orig is None:
                orig = [st["attrs"]["name"]] if isinstance(st["attrs"].get("name"), str) else []
            for o in orig:
                if o in order:
                    owner[o] = k
        return owner


# -- pairing and the report ------------------------------------------------------------------
def _key(node: Any) -> str:
    return node.name or node.output[0]


def _match(node: Any, om: _Om, outs: Sequence[int]) -> tuple[str, int] | None:
    """The (ONNX output, .om activation) pair among `outs` that names one of `node`'s outputs."""
    for o in node.output:
        for cand in (o, f"{o}_f16"):
            a = om.by_name.get(cand)
            if a is not None and a in outs:
                return o, a
    return None


def _pair(node: Any, om: _Om, step: int | None, latest: bool) -> tuple[str, int] | str:
    """Where `node`'s output sits in the .om: an (ONNX output, activation) pair, or a status."""
    if step is not None:
        outs = om.steps[step]["outputs"]
        hit = _match(node, om, outs)
        if hit is not None:
            return hit
        if latest and outs and node.output:
            return node.output[0], outs[0]
        return f"fused into step {step} ({om.steps[step]['kernel']})"
    hit = _match(node, om, list(om.producer))
    return hit if hit is not None else "not in .om"


def compare(model: Any, program: dict[str, Any], ref: dict[str, np.ndarray],
            kept: dict[str, np.ndarray]) -> list[NodeResult]:
    """One `NodeResult` per ONNX node of `model`, in ONNX order."""
    nodes = list(model.graph.node)
    weights = {t.name for t in model.graph.initializer}
    order = {_key(n): i for i, n in enumerate(nodes)}
    om = _Om(program, kept)
    owner = om.claims(order)
    latest: dict[int, str] = {}
    for key, k in owner.items():
        if k not in latest or order[key] > order[latest[k]]:
            latest[k] = key
    rows = []
    for i, n in enumerate(nodes):
        key = _key(n)
        step = owner.get(key)
        where = _pair(n, om, step, step is not None and latest.get(step) == key)
        row = NodeResult(i, key, n.op_type, n.output[0] if n.output else "", "", step, inputs=[x for x in n.input if x and x not in weights])
        if isinstance(where, str):
            row.status = where
            if step is not None:
                row.kernel = om.steps[step]["kernel"]
        else:
            _fill(row, om, ref, *where)
        rows.append(row)
    return rows


def _fill(row: NodeResult, om: _Om, ref: dict[str, np.ndarray], output: str, act: int) -> None:
    k = om.producer.get(act)
    row.step, row.output, row.om_value = k, output, om.acts[act]["name"]
    row.kernel = om.steps[k]["kernel"] if k is not None else ""
    a, b = ref.get(output), om.value(act)
    if a is None or b is None:
        row.status = "no .om value (not kept, or INT8 without a known scale)" if b is None else "no onnxruntime value"
        return
    if a.size != b.size:
        row.status = f"shape differs: onnx {list(a.shape)}, om {list(b.shape)}"
        return
    row.status = "compared"
    for name, v in metrics(a, b).items():
        setattr(row, name, v)


def first_below(rows: list[NodeResult], threshold: float) -> NodeResult | None:
    return next((r for r in rows if r.cosine is not None and r.cosine < threshold), None)


def describe(row: NodeResult, rows: list[NodeResult]) -> str:
    """One line: the node, its op type, its cosine and its inputs' cosines."""
    made_by = {o: r for r in rows for o in ([r.output] if r.output else [])}
    fused_here = f"fused into step {row.step} "
    parts, todo, seen = [], list(row.inputs), set()
    while todo:  # the inputs of the whole fused chain: an inner node's inputs stand for it
        name = todo.pop(0)
        r = made_by.get(name)
        if name in seen:
            continue
        seen.add(name)
        if r is not None and r.status.startswith(fused_here):
            todo[:0] = r.inputs
        elif r is None:
            parts.append(f"{name}=(graph input)")
        elif r.cosine is None:
            parts.append(f"{name}=({r.status})")
        else:
            parts.append(f"{name}={r.cosine:.9f}")
    return (f"{row.node} ({row.op_type}, step {row.step} {row.kernel}): cosine {row.cosine:.9f}; "
            f"inputs: {', '.join(parts) or '(none)'}")


def write_report(outdir: Path, rows: list[NodeResult], threshold: float) -> None:
    from runtime.om import write_atomic

    outdir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    cols = ["index", "node", "op_type", "output", "status", "step", "kernel", "om_value", *METRICS]
    w = csv.DictWriter(buf, cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    write_atomic(outdir / "compare.csv", buf.getvalue().encode())
    first = first_below(rows, threshold)
    doc = {"threshold": threshold, "first_below": first.node if first else None,
           "nodes": [asdict(r) for r in rows]}
    write_atomic(outdir / "compare.json", json.dumps(doc, indent=1, allow_nan=True).encode())


# -- the command line ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="atcpy-compare", description="Layer-wise comparison of an .om against onnxruntime.")
    p.add_argument("--model", required=True, help="the ONNX model the .om was compiled from")
    p.add_argument("--om", required=True, help="the .om file")
    p.add_argument("--input", default=None, help="comma-separated .npy/.npz/.bin files, in input order")
    p.add_argument("--output", required=True, help="directory for compare.csv and compare.json")
    p.add_argument("--threshold", type=float, default=0.99, help="the cosine below which a node is reported")
    return p


def _run(args: argparse.Namespace) -> int:
    from runtime.cli import check_not_onnx, load_inputs, regular_file
    from runtime.session import Session

    model = _load_onnx(str(regular_file("--model", args.model, _UsageError)))
    check_not_onnx(regular_file("--om", args.om, _UsageError))
    sess = Session(args.om)
    specs = sess.get_inputs()
    paths = [s for s in (args.input or "").split(",") if s]
    feeds = load_inputs(paths, specs) if paths or specs else {}
    ref = run_onnx_all(model, feeds)
    kept = sess.run_all(feeds)
    rows = compare(model, sess.executable.program, ref, kept)
    write_report(Path(args.output), rows, args.threshold)
    n = sum(r.cosine is not None for r in rows)
    worst = min((r.cosine for r in rows if r.cosine is not None), default=None)
    print(f"compared {n} of {len(rows)} ONNX nodes"
          + (f"; lowest cosine {worst:.9f}" if worst is not None else "")
          + f"; report: {Path(args.output) / 'compare.csv'}")
    first = first_below(rows, args.threshold)
    if first is None:
        print(f"every compared node has cosine >= {args.threshold}")
    else:
        print(f"first node below {args.threshold}: {describe(first, rows)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from runtime.errors import InputError, OmFormatError, RuntimeFailure

    try:
        return _run(build_parser().parse_args(argv))
    except _Fail as e:
        print(f"atcpy-compare: error: {e}", file=sys.stderr)
        return e.code
    except (OmFormatError, InputError, RuntimeFailure) as e:
        print(f"atcpy-compare: error: {e}", file=sys.stderr)
        return e.exit_code
