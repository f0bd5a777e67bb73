"""Latency of atcpy's runtime against onnxruntime and onnx.reference, in one run.

    python bench/latency.py [--set light|modern|all] [--models squeezenet,resnet50] [--repeat 7]
                            [--threads 1] [--no-reference] [--fp16] [--modern-dir /tmp/atcpy-modern]

For each light model shipped inside the onnx package
(``onnx/backend/test/data/light/*.onnx``; ``--set light``, the default) or of
the modern set (``--set modern``: torchvision architectures that
``bench/modern_models.py`` exports into ``--modern-dir`` -- it needs a bench-only
environment with torchvision, see its docstring) it compiles with
``compiler.compile_model`` (falling back to frontend + codegen when the driver
is missing), then times the engines on the same random input and prints
median latencies, the ratios atcpy/ort and reference/atcpy, the compile time
and the largest relative difference to onnxruntime, the output cosine to
onnxruntime, and the compiled model's AICPU op count.  ``--fp16`` also compiles
with ``precision_mode=force_fp16`` and prints its latency over atcpy fp32's and
its cosine to onnxruntime fp32.  The modern set skips onnx.reference (minutes
per model).

Threads: atcpy's BLAS and onnxruntime's intra-op pool get the SAME number of
threads (``--threads``; numpy's BLAS is limited with threadpoolctl, else set
OPENBLAS_NUM_THREADS to the same value).  The default is 1: on the shared
2-core development machine two BLAS threads oversubscribe the cores and
OpenBLAS's spinning threads make many small GEMMs (grouped/depthwise convs)
up to 100x slower, which measures the neighbours, not the runtime.
atcpy and onnxruntime runs are interleaved (a, o, a, o, ...) so that load
from other processes hits both alike.

BLAS kernel: atcpy's Cube ops run on numpy's OpenBLAS, onnxruntime on its own
MLAS.  An environment that sets OPENBLAS_CORETYPE (the development machines set
``Haswell``, an AVX2 kernel, on AVX-512 CPUs) caps OpenBLAS's sgemm — measured
61 GMAC/s against 117 with the CPU's own kernel, one thread — while MLAS still
uses AVX-512.  The header prints the setting; ``env -u OPENBLAS_CORETYPE python
bench/latency.py`` measures with the kernel OpenBLAS picks for the CPU.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


def _compile(path: str, **opts):
    from compiler.driver import compile_model

    return compile_model(path, soc_version="Ascend310P3", **opts)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def _aicpu_ops(exe) -> int:
    return int(exe.header["report"].get("ops", {}).get("by_engine", {}).get("aicpu", 0))


def _median_time(fn, repeat: int, budget_s: float = 60.0) -> float:
    fn()  # warm up
    times = []
    start = time.perf_counter()
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def _median_times_interleaved(fns, repeat: int, budget_s: float = 60.0) -> list[float]:
    """Median wall time of each fn, the fns run in turn each round."""
    for fn in fns:
        fn()  # warm up
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return [statistics.median(ts) for ts in times]


def _limit_blas_threads(n: int) -> str:
    """Limit numpy's BLAS pool to n threads; returns a description for the header."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "?"
        return f"BLAS threads from the environment: {env} (threadpoolctl missing)"
    threadpool_limits(n, user_api="blas")
    pools = [f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info() if p["user_api"] == "blas"]
    return "BLAS threads: " + (", ".join(pools) or "none found")


def _bench_model(path: str, args: argparse.Namespace) -> dict | None:
    """Compile time, latencies (atcpy, onnxruntime, onnx.reference, atcpy fp16), max relative
    difference and cosines for one model, or None when it does not compile."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from runtime import Session

    t0 = time.perf_counter()
    try:
        exe = _compile(path)
        exe16 = _compile(path, precision_mode="force_fp16") if args.fp16 else None
    except Exception as e:  # noqa: BLE001 - a benchmark reports and goes on
        print(f"{_name(path):<18} compile failed: {type(e).__name__}: {str(e)[:80]}")
        return None
    row = {"compile_s": (time.perf_counter() - t0) / (2 if args.fp16 else 1), "aicpu": _aicpu_ops(exe)}
    sess = Session(exe.to_bytes())
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.RandomState(0).random_sample(shape).astype(np.float32)
    feeds = {inp.name: x}
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    osess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ours = sess.run(None, feeds)[0]
    theirs = osess.run(None, feeds)[0]
    row["rel"] = float(np.abs(ours.astype(np.float64) - theirs).max() / max(np.abs(theirs).max(), 1e-30))
    row["cos"] = _cosine(ours, theirs)
    fns = [lambda s=sess, f=feeds: s.run(None, f), lambda s=osess, f=feeds: s.run(None, f)]
    if exe16 is not None:
        s16 = Session(exe16.to_bytes())
        row["cos16"] = _cosine(s16.run(None, feeds)[0], theirs)
        fns.append(lambda s=s16, f=feeds: s.run(None, f))
    times = _median_times_interleaved(fns, args.repeat)
    row["atc"], row["ort"] = times[0], times[1]
    row["fp16"] = times[2] if exe16 is not None else float("nan")
    if args.no_reference:
        row["ref"] = float("nan")
    else:
        ref = ReferenceEvaluator(path)
        row["ref"] = _median_time(lambda s=ref, f=feeds: s.run(None, f), args.ref_repeat, budget_s=120)
    return row


def _name(path: str) -> str:
    return Path(path).stem.replace("light_", "")


def _paths(args: argparse.Namespace) -> list[str]:
    paths = sorted(glob.glob(str(LIGHT / "*.onnx"))) if args.set in ("light", "all") else []
    if args.set in ("modern", "all"):
        from bench.modern_models import MODELS

        found = [str(args.modern_dir / f"{m}.onnx") for m in MODELS if (args.modern_dir / f"{m}.onnx").exists()]
        if len(found) < len(MODELS):
            print(f"modern set: {len(found)} of {len(MODELS)} models in {args.modern_dir}; export them with "
                  f"bench/modern_models.py (see its docstring)")
        paths += found
        args.no_reference = args.no_reference or args.set == "modern"
    if args.models:
        keys = args.models.split(",")
        paths = [p for p in paths if any(k in Path(p).stem for k in keys)]
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated substrings of model names (default: all)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--ref-repeat", type=int, default=1, help="onnx.reference is slow: fewer repeats")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for BOTH numpy's BLAS and onnxruntime (default 1, see above)")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--set", default="light", choices=["light", "modern", "all"], help="which models")
    ap.add_argument("--modern-dir", type=Path, default=Path("/tmp/atcpy-modern"),
                    help="where bench/modern_models.py exported the modern set")
    ap.add_argument("--fp16", action="store_true", help="also time precision_mode=force_fp16")
    args = ap.parse_args(argv)

    paths = _paths(args)
    print(f"threads: onnxruntime intra-op={args.threads}, {_limit_blas_threads(args.threads)}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(auto)')}")
    header = (f"{'model':<18} {'compile s':>9} {'atcpy ms':>9} {'ort ms':>8} {'ref ms':>9} "
              f"{'atcpy/ort':>9} {'ref/atcpy':>9} {'max rel diff':>12} {'cosine':>9} {'aicpu':>5}"
              + (f" {'fp16/fp32':>9} {'fp16 cos':>9}" if args.fp16 else ""))
    print(header)
    print("-" * len(header))
    ratios_ort, ratios_ref, ratios_16 = [], [], []
    for path in paths:
        r = _bench_model(path, args)
        if r is None:
            continue
        ratios_ort.append(r["atc"] / r["ort"])
        if not np.isnan(r["ref"]):
            ratios_ref.append(r["ref"] / r["atc"])
        line = (f"{_name(path):<18} {r['compile_s']:>9.2f} {r['atc'] * 1e3:>9.2f} {r['ort'] * 1e3:>8.2f} "
                f"{r['ref'] * 1e3:>9.1f} {r['atc'] / r['ort']:>9.2f} {r['ref'] / r['atc']:>9.1f} {r['rel']:>12.2e} "
                f"{r['cos']:>9.6f} {r['aicpu']:>5}")
        if args.fp16:
            ratios_16.append(r["fp16"] / r["atc"])
            line += f" {r['fp16'] / r['atc']:>9.2f} {r['cos16']:>9.6f}"
        print(line, flush=True)
    if ratios_ort:
        print("-" * len(header))
        med_ref = f"{statistics.median(ratios_ref):.1f}x" if ratios_ref else "n/a"
        print(f"median atcpy/ort = {statistics.median(ratios_ort):.2f}, max {max(ratios_ort):.2f}   "
              f"median reference/atcpy = {med_ref}"
              + (f"   fp16/fp32 median {statistics.median(ratios_16):.2f}, max {max(ratios_16):.2f}"
                 if ratios_16 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
