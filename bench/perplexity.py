"""Per-byte perplexity of a small byte-level LLaMA, trained here, under atcpy's
precisions and quantizations beside onnxruntime's quantizers, in one run.

    python bench/perplexity.py [--dir DIR] [--steps 500] [--windows 16] [--length 256]
                               [--prefill 64] [--chunk 64] [--prompt 64] [--new 64] [--only REGEX]

The model (`bench._bytellm`): a LLaMA over bytes (4 layers, hidden 256, 4 query /
2 KV heads, intermediate 768, context 256) trained with torch for ``--steps`` on
the Python standard library's sources, held-out files kept for evaluation;
trained once and exported with optimum (``text-generation-with-past``) into
``--dir``, reused by later runs (torch trains on 2 threads).  The output says how
far below a unigram byte model's perplexity the trained model's is.

Evaluation: ``--windows`` windows of ``--length`` held-out bytes at fixed,
evenly spaced offsets, every byte predicted from the ones before it in its
window.  Each window runs through the KV cache, identically for every engine: a
``--prefill`` chunk, then ``--chunk``-sized chunks with the past fed back
(`bench._ppl_engines.chunked_nll`).  Perplexity is ``exp`` of the mean
negative log-likelihood per byte; "vs fp32" is its increase over the same
engine's fp32.

atcpy: fp32, fp16, W8A16 (group 128), W4A16 at groups 32 and 128 rounded by RTN
and by GPTQ, W8A8 (``allow_quantize``), each also with ``kv_cache_dtype=int8``.
GPTQ and W8A8 calibrate on 8 training windows fed at past 64 (the past from the
fp32 model).  onnxruntime, on the same ONNX file: fp32, ``MatMulNBitsQuantizer``
with its default (MLAS blockwise round-to-nearest, "RTN") and HQQ configs at 4
and 8 bits, its Intel Neural Compressor RTN ("RTN-INC") and GPTQ at 4 bits
(those two are 4-bit only there), blocks 32 and 128, symmetric and asymmetric
where the algorithm has the choice, GPTQ on the same calibration samples; and
``quantize_dynamic`` (int8, MatMuls only).

Bytes: "weights" is every weight of the model (the executable's report /
the ONNX initializers); "matrices" only the quantized matrices' operands
(weights, scales, zero points of every MatMul-like op), and "ratio" that over
fp32's.  A variant that fails to compile or run prints "failed: <reason>".

After the table, the generation check: greedy ``--new`` tokens from three
held-out prompts with atcpy W8A16 + INT8 KV against atcpy fp32 (and atcpy fp32
against transformers' ``generate``), the share of equal tokens.  The Done-means
checks of issue 16 close the output, a PASS / FAIL line each; the exit code is 1
when any fails.  One thread for onnxruntime and numpy's BLAS.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # a script: one BLAS thread, set before numpy starts its pools (not on import)
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_v, "1")

import argparse
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._bytellm import Corpus, TrainConfig, ensure_model, load_corpus, unigram_perplexity
from bench._ppl_engines import (
    AtcRunner,
    OrtRunner,
    OrtSpec,
    TorchRunner,
    atc_bytes,
    chunked_nll,
    kv_dtypes,
    onnx_bytes,
    ort_quantize,
)
from bench._ppl_report import Row, print_table, verdicts

CALIB_SAMPLES = 8
GEN_PROMPTS = 3
GEN_VARIANTS = ("W8A16 +kv8", "W8A16", "fp32 +kv8")  # generated with: the checked one first, then its parts


@dataclass(frozen=True)
class AtcSpec:
    """One atcpy compile: a name, the bits column and `compile_model`'s options."""

    name: str
    bits: str
    options: dict[str, Any] = field(default_factory=dict)
    calibrated: bool = False  # gets --calibration_data (GPTQ, W8A8)


def atc_specs() -> list[AtcSpec]:
    base = [
        AtcSpec("fp32", "w32 a32"),
        AtcSpec("fp16", "w16 a16", {"precision_mode": "force_fp16"}),
        AtcSpec("W8A16", "w8 g128", {"quant_type": "W8A16", "weight_group_size": 128}),
        AtcSpec("W4A16 g128 RTN", "w4 g128", {"quant_type": "W4A16", "weight_group_size": 128}),
        AtcSpec("W4A16 g128 GPTQ", "w4 g128", {"quant_type": "W4A16", "weight_group_size": 128,
                                               "weight_rounding": "gptq"}, True),
        AtcSpec("W4A16 g32 RTN", "w4 g32", {"quant_type": "W4A16", "weight_group_size": 32}),
        AtcSpec("W4A16 g32 GPTQ", "w4 g32", {"quant_type": "W4A16", "weight_group_size": 32,
                                             "weight_rounding": "gptq"}, True),
        *[AtcSpec(f"W4A16 g{g} {r.upper()} asym", f"w4 g{g} asym",
                  {"quant_type": "W4A16", "weight_group_size": g, "weight_rounding": r, "weight_symmetric": False},
                  r == "gptq") for g in (128, 32) for r in ("rtn", "gptq")],
        AtcSpec("W8A8", "w8 a8", {"precision_mode": "allow_quantize"}, True),
    ]
    kv = [AtcSpec(f"{s.name} +kv8", f"{s.bits} kv8", {**s.options, "kv_cache_dtype": "int8"}, s.calibrated)
          for s in base]
    return base + kv


def ort_specs() -> list[OrtSpec]:
    out = []
    for bits in (4, 8):
        for block in (32, 128):
            out += [OrtSpec("rtn", bits, block, True), OrtSpec("rtn", bits, block, False)]
            if bits == 4:
                out += [OrtSpec("rtn-inc", 4, block, True), OrtSpec("rtn-inc", 4, block, False),
                        OrtSpec("gptq", 4, block, True), OrtSpec("gptq", 4, block, False)]
            out.append(OrtSpec("hqq", bits, block, False))
    return out + [OrtSpec("dynamic", 8)]


@dataclass
class Data:
    """The evaluation windows, the calibration samples and the generation prompts."""

    ids: np.ndarray  # [windows, length]
    targets: np.ndarray
    samples: list[dict[str, np.ndarray]]  # batch-1 calibration feeds (onnxruntime's GPTQ)
    npz: Path  # the same samples, batched (atcpy's --calibration_data)
    prompts: list[np.ndarray]


def eval_windows(heldout: np.ndarray, windows: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``windows`` windows of ``length`` inputs (and the next byte of each) at evenly spaced offsets."""
    starts = np.linspace(0, len(heldout) - length - 2, windows).astype(np.int64)
    seq = np.stack([heldout[s:s + length + 1] for s in starts]).astype(np.int64)
    return seq[:, :-1], seq[:, 1:]


def prompts_from(heldout: np.ndarray, n: int, length: int) -> list[np.ndarray]:
    """``n`` prompts of ``length`` bytes, each starting a line, spread over the held-out text."""
    out = []
    for k in range(n):
        at = int(len(heldout) * (2 * k + 1) / (2 * n + 1))
        nl = np.flatnonzero(heldout[at:at + 4096] == ord("\n"))
        at += int(nl[0]) + 1 if len(nl) else 0
        out.append(heldout[None, at:at + length].astype(np.int64))
    return out


def calibration(path: Path, corpus: Corpus, args: argparse.Namespace, out_dir: Path) -> tuple[list, Path]:
    """Calibration feeds: training windows at past ``--prefill`` (the past from onnxruntime fp32)."""
    rng = np.random.default_rng(1)
    n, c = args.prefill, args.chunk
    starts = rng.integers(0, len(corpus.train) - n - c, CALIB_SAMPLES)
    ids = np.stack([corpus.train[s:s + n + c] for s in starts]).astype(np.int64)
    ort = OrtRunner(path)
    ort.reset(CALIB_SAMPLES)
    ort.step(ids[:, :n])
    feeds = {"input_ids": ids[:, n:], "attention_mask": np.ones((CALIB_SAMPLES, n + c), np.int64),
             "position_ids": np.broadcast_to(np.arange(n, n + c, dtype=np.int64), (CALIB_SAMPLES, c)).copy(),
             **ort.past}
    feeds = {k: v for k, v in feeds.items() if k in ort.inputs}
    npz = out_dir / "calibration.npz"
    np.savez(npz, **feeds)
    return [{k: v[i:i + 1] for k, v in feeds.items()} for i in range(CALIB_SAMPLES)], npz


def perplexity(runner: Any, data: Data, args: argparse.Namespace) -> float:
    nll = chunked_nll(runner, data.ids, data.targets, args.prefill, args.chunk)
    return float(math.exp(nll.mean()))


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text.rpartition(" was false. ")[2]  # onnxruntime's failed ORT_ENFORCE: the message after the check
    return f"{type(e).__name__}: {text[:150]}{'...' if len(text) > 150 else ''}"


def atc_row(spec: AtcSpec, path: Path, data: Data, args: argparse.Namespace, keep: dict[str, Any]) -> Row:
    from compiler import compile_model

    row, t0 = Row(spec.name, "atcpy", spec.bits), time.perf_counter()
    try:
        opts = {**spec.options, "progress": False}
        if spec.calibrated:
            opts["calibration_data"] = str(data.npz)
        exe = compile_model(str(path), dim_range=args.dims, **opts)
        row.weight_bytes, row.matrix_bytes = atc_bytes(exe)
        kv = kv_dtypes(exe)
        if spec.options.get("kv_cache_dtype") == "int8" and not kv <= {"i8", "int8"}:
            row.note = f"(KV cache stored as {', '.join(sorted(kv)) or 'model inputs'}, not int8)"
        row.ppl = perplexity(AtcRunner(exe), data, args)
        if spec.name == "fp32" or spec.name in GEN_VARIANTS:
            keep[spec.name] = exe
    except Exception as e:  # noqa: BLE001 - a failing variant is a row, not the end of the bench
        row.error = _reason(e)
    row.seconds = time.perf_counter() - t0
    return row


def ort_row(spec: OrtSpec | None, path: Path, data: Data, args: argparse.Namespace, work: Path) -> Row:
    row = Row(spec.name if spec else "fp32", "onnxruntime", spec.bits_label if spec else "w32 a32")
    if spec is not None and spec.algo != "dynamic":
        row.nbits, row.block = spec.bits, spec.block
    t0 = time.perf_counter()
    try:
        q = path if spec is None else ort_quantize(spec, path, work / f"ort-{spec.algo}-{spec.bits}-{spec.block}-"
                                                   f"{int(spec.sym)}.onnx", data.samples)
        row.weight_bytes, row.matrix_bytes = onnx_bytes(q)
        row.ppl = perplexity(OrtRunner(q), data, args)
    except Exception as e:  # noqa: BLE001
        row.error = _reason(e)
    row.seconds = time.perf_counter() - t0
    return row


def torch_row(path: Path, data: Data, args: argparse.Namespace) -> tuple[Row, Any]:
    from bench._bytellm import load_torch

    t0 = time.perf_counter()
    model = load_torch(path)
    row = Row("fp32", "transformers", "w32 a32", perplexity(TorchRunner(model), data, args))
    row.seconds = time.perf_counter() - t0
    return row, model


# -- generation ---------------------------------------------------------------------------

def _agree(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, list[float], list[int]]:
    """Percent of new tokens equal (overall and per prompt) and each prompt's first difference (-1: none)."""
    each = [100.0 * float((x == y).mean()) for x, y in zip(a, b)]
    first = [int(np.flatnonzero(x[0] != y[0])[0]) if (x != y).any() else -1 for x, y in zip(a, b)]
    return sum(each) / len(each), each, first


def _text(tokens: np.ndarray) -> str:
    return repr(bytes(int(t) for t in tokens.ravel() if t < 256).decode("utf-8", "replace"))


def _margin(model: Any, prompt: np.ndarray, ref: np.ndarray, at: int) -> float:
    """fp32's logit gap between its first and second choice at new token ``at`` (transformers)."""
    runner = TorchRunner(model)
    runner.reset(1)
    top = np.sort(runner.step(np.concatenate([prompt, ref[:, :at]], axis=1))[0, -1])
    return float(top[-1] - top[-2])


def _forced(runner: Any, prompts: list[np.ndarray], ref: list[np.ndarray]) -> float:
    """Percent of new positions where ``runner``'s top choice is fp32's, fed fp32's tokens (no cascade)."""
    same = total = 0
    for p, r in zip(prompts, ref):
        runner.reset(1)
        last = runner.step(p)[:, -1:]
        logits = np.concatenate([last, runner.step(r[:, :-1])], axis=1) if r.shape[1] > 1 else last
        same += int((logits.argmax(-1) == r).sum())
        total += r.size
    return 100.0 * same / total


def _compare(label: str, got: list[np.ndarray], ref: list[np.ndarray], data: Data, model: Any,
             out: Any) -> tuple[float, str]:
    pct, each, first = _agree(got, ref)
    gaps = [f"{_margin(model, p, r, k):.3f}" if k >= 0 else "-" for p, r, k in zip(data.prompts, ref, first)]
    note = (f"(per prompt {', '.join(f'{e:.0f}%' for e in each)}; first difference at new token {first}, "
            f"where fp32's top-2 logit gap is {', '.join(gaps)})")
    out(f"  {label}: {pct:.1f}% of new tokens equal {note}")
    return pct, note


def generation_check(keep: dict[str, Any], model: Any, data: Data, new: int, out: Any) -> tuple[float | None, str]:
    """Greedy tokens of atcpy W8A16 + INT8 KV (and of W8A16 and fp32 + INT8 KV alone, and
    transformers) against atcpy fp32; returns the checked share of equal tokens."""
    if "fp32" not in keep:
        return None, "(atcpy fp32 failed)"
    ref = [AtcRunner(keep["fp32"]).generate(p, new) for p in data.prompts]
    out(f"\ngeneration: greedy {new} new tokens from {len(data.prompts)} held-out prompts of "
        f"{data.prompts[0].shape[1]} bytes, each against atcpy fp32's")
    for p, r in zip(data.prompts, ref):
        out(f"  prompt ...{_text(p[0, -32:])} -> atcpy fp32 {_text(r)}")
    _compare("transformers generate (fp32)", [TorchRunner(model).generate(p, new) for p in data.prompts], ref, data,
             model, out)
    result: tuple[float | None, str] = (None, "(atcpy W8A16 +kv8 failed)")
    for name in GEN_VARIANTS:
        if name not in keep:
            continue
        try:
            got = [AtcRunner(keep[name]).generate(p, new) for p in data.prompts]
        except Exception as e:  # noqa: BLE001
            out(f"  atcpy {name}: generation failed: {_reason(e)}")
            continue
        pct, note = _compare(f"atcpy {name}", got, ref, data, model, out)
        out(f"    fed fp32's tokens instead (no cascade), its top choice is fp32's at "
            f"{_forced(AtcRunner(keep[name]), data.prompts, ref):.1f}% of the new positions")
        if name == GEN_VARIANTS[0]:
            result = (pct, note)
    return result


def _say(text: str) -> None:
    print(text, flush=True)


# -- the run ------------------------------------------------------------------------------

def prepare(args: argparse.Namespace, cfg: TrainConfig, out: Any) -> tuple[Path, dict, Corpus, Data]:
    corpus = load_corpus()
    path, info = ensure_model(cfg, corpus, args.dir, log=out)
    ids, targets = eval_windows(corpus.heldout, args.windows, args.length)
    prompts = prompts_from(corpus.heldout, GEN_PROMPTS, args.prompt)
    work = path.parent / "work"
    work.mkdir(exist_ok=True)
    samples, npz = calibration(path, corpus, args, work)
    seq_hi = max(args.prefill, args.chunk, args.prompt)
    past_hi = max(args.length, args.prompt + args.new) - 1
    args.dims = f"sequence_length:1~{seq_hi};past_sequence_length:0~{past_hi};batch_size:1~{args.windows}"
    return path, info, corpus, Data(ids, targets, samples, npz, prompts)


def run(args: argparse.Namespace, cfg: TrainConfig, atc: list[AtcSpec], ort: list[OrtSpec | None],
        out: Any = None) -> tuple[list[Row], list[str]]:
    """Train or load, evaluate every variant, print the table, the generation check and
    the verdicts (each line through ``out``, default: print and flush); returns the
    rows and the verdict lines."""
    out = out or _say
    path, info, corpus, data = prepare(args, cfg, out)
    trained = "loaded from cache" if info.get("cached") else f"trained in {info['train_s']:.0f} s"
    out(f"model: byte-level LLaMA {cfg.layers} layers, hidden {cfg.hidden}, {cfg.heads}/{cfg.kv_heads} heads, "
        f"intermediate {cfg.intermediate}, {info['params']} parameters; {cfg.steps} steps x {cfg.batch} x "
        f"{cfg.context} bytes ({trained}, final training loss {info['final_loss']:.3f}) -> {path}")
    out(f"corpus: {corpus.train_files} stdlib files for training ({len(corpus.train)} bytes), "
        f"{corpus.heldout_files} held out ({len(corpus.heldout)} bytes); evaluation: {args.windows} windows x "
        f"{args.length} bytes, a {args.prefill}-byte prefill then {args.chunk}-byte chunks through the KV cache")
    out(f"atcpy compiles with --dim_range={args.dims}")
    rows: list[Row] = []
    torch_row_, model = torch_row(path, data, args)
    rows.append(torch_row_)
    keep: dict[str, Any] = {}
    for spec in atc:
        rows.append(atc_row(spec, path, data, args, keep))
        out(f"  atcpy {spec.name}: " + (f"failed: {rows[-1].error}" if rows[-1].error else f"{rows[-1].ppl:.4f}"))
    for spec in ort:
        rows.append(ort_row(spec, path, data, args, path.parent / "work"))
        out(f"  onnxruntime {rows[-1].name} {rows[-1].bits}: "
            + (f"failed: {rows[-1].error}" if rows[-1].error else f"{rows[-1].ppl:.4f}"))
    unigram = unigram_perplexity(corpus.train, data.targets)
    out(f"\nper-byte perplexity: trained model {torch_row_.ppl:.4f} (transformers fp32), a unigram byte model "
        f"{unigram:.4f}: {unigram / torch_row_.ppl:.1f}x lower" + ("" if torch_row_.ppl < 0.5 * unigram
                                                                   else " -- NOT clearly below the unigram model"))
    print_table(rows, out)
    gen, note = generation_check(keep, model, data, args.new, out)
    lines = verdicts(rows, gen, note)
    out("\nissue 16, Done means:")
    for line in lines:
        out("  " + line)
    return rows, lines


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "atcpy-bench-perplexity",
                    help="where the trained model and its export are cached")
    ap.add_argument("--steps", type=int, default=TrainConfig.steps, help="training steps (default %(default)s)")
    ap.add_argument("--windows", type=int, default=16, help="held-out windows (default 16)")
    ap.add_argument("--length", type=int, default=256, help="bytes a window (default 256)")
    ap.add_argument("--prefill", type=int, default=64, help="the first chunk of a window (default 64)")
    ap.add_argument("--chunk", type=int, default=64, help="the later chunks, through the KV cache (default 64)")
    ap.add_argument("--prompt", type=int, default=64, help="generation prompt bytes (default 64)")
    ap.add_argument("--new", type=int, default=64, help="generated tokens a prompt (default 64)")
    ap.add_argument("--only", default=None, help="regex: run the variants whose 'engine name bits' matches")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    atc, ort = atc_specs(), [None, *ort_specs()]
    if args.only:
        pat = re.compile(args.only)
        atc = [s for s in atc if s.name == "fp32" or pat.search(f"atcpy {s.name} {s.bits}")]
        ort = [s for s in ort if s is None or pat.search(f"onnxruntime {s.name} {s.bits_label}")]
    t0 = time.perf_counter()
    _, lines = run(args, TrainConfig(steps=args.steps), atc, ort)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    return 0 if all(line.startswith("PASS") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
