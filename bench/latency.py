"""Latency of atcpy's runtime against onnxruntime and onnx.reference, in one run.

    python bench/latency.py [--models squeezenet,resnet50] [--repeat 5] [--threads 2] [--no-reference]

For each light model shipped inside the onnx package
(``onnx/backend/test/data/light/*.onnx``) it compiles with
``compiler.compile_model`` (falling back to frontend + codegen when the driver
is missing), then times the three engines on the same random input and prints
median latencies, the ratios atcpy/ort and reference/atcpy, the compile time
and the largest relative difference to onnxruntime.  onnxruntime gets as many
intra-op threads as numpy's BLAS (``--threads``; set OPENBLAS_NUM_THREADS to the
same value for a fair run).
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


def _compile(path: str):
    try:
        from compiler.driver import compile_model
    except ImportError:
        compile_model = None
    if compile_model is not None:
        return compile_model(path, soc_version="Ascend310P3")
    from codegen import build_executable
    from compiler.frontend import import_onnx

    return build_executable(import_onnx(path), soc_version="Ascend310P3")


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated substrings of model names (default: all)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ref-repeat", type=int, default=1, help="onnx.reference is slow: fewer repeats")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from runtime import Session

    paths = sorted(glob.glob(str(LIGHT / "*.onnx")))
    if args.models:
        keys = args.models.split(",")
        paths = [p for p in paths if any(k in Path(p).stem for k in keys)]
    header = (f"{'model':<18} {'compile s':>9} {'atcpy ms':>9} {'ort ms':>8} {'ref ms':>9} "
              f"{'atcpy/ort':>9} {'ref/atcpy':>9} {'max rel diff':>12}")
    print(header)
    print("-" * len(header))
    ratios_ort, ratios_ref = [], []
    for path in paths:
        name = Path(path).stem.replace("light_", "")
        t0 = time.perf_counter()
        try:
            exe = _compile(path)
        except Exception as e:  # noqa: BLE001 - a benchmark reports and goes on
            print(f"{name:<18} compile failed: {type(e).__name__}: {str(e)[:80]}")
            continue
        compile_s = time.perf_counter() - t0
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
        rel = float(np.abs(ours.astype(np.float64) - theirs).max() / max(np.abs(theirs).max(), 1e-30))
        t_atc = _median_time(lambda s=sess, f=feeds: s.run(None, f), args.repeat)
        t_ort = _median_time(lambda s=osess, f=feeds: s.run(None, f), args.repeat)
        if args.no_reference:
            t_ref = float("nan")
        else:
            ref = ReferenceEvaluator(path)
            t_ref = _median_time(lambda s=ref, f=feeds: s.run(None, f), args.ref_repeat, budget_s=120)
        ratios_ort.append(t_atc / t_ort)
        if not np.isnan(t_ref):
            ratios_ref.append(t_ref / t_atc)
        print(f"{name:<18} {compile_s:>9.2f} {t_atc * 1e3:>9.2f} {t_ort * 1e3:>8.2f} {t_ref * 1e3:>9.1f} "
              f"{t_atc / t_ort:>9.2f} {t_ref / t_atc:>9.1f} {rel:>12.2e}", flush=True)
    if ratios_ort:
        print("-" * len(header))
        med_ref = f"{statistics.median(ratios_ref):.1f}x" if ratios_ref else "n/a"
        print(f"median atcpy/ort = {statistics.median(ratios_ort):.2f}  (target <= 2)   "
              f"median reference/atcpy = {med_ref}  (target >= 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
