"""ONNX node-case conformance: every case of
`onnx.backend.test.case.node.collect_testcases` through atcpy
(compile → .om bytes → runtime), next to `onnx.reference.ReferenceEvaluator`.

    python bench/conformance.py [--filter REGEX] [--show-failures N] [--json out.json]

Prints ``N passed, M failed`` for atcpy, the same for the reference
evaluator, atcpy's pass rate over the cases the reference itself passes, and
atcpy's failures grouped by op type with the first error of each.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from onnx.backend.test.case.node import collect_testcases

__all__ = ["main", "run_cases"]


def _compare(outputs: list[Any], expected: list[Any], rtol: float, atol: float) -> None:
    if len(outputs) != len(expected):
        raise AssertionError(f"{len(outputs)} outputs, expected {len(expected)}")
    for o, e in zip(outputs, expected):
        e = np.asarray(e) if not isinstance(e, list) else e
        if isinstance(e, list):
            if len(o) != len(e):
                raise AssertionError("sequence lengths differ")
            for oo, ee in zip(o, e):
                _compare([oo], [ee], rtol, atol)
            continue
        o = np.asarray(o)
        if o.shape != e.shape:
            raise AssertionError(f"shape {o.shape}, expected {e.shape}")
        if e.dtype == object or o.dtype == object:
            if not (o.astype(str) == e.astype(str)).all():
                raise AssertionError("string values differ")
            continue
        if o.dtype != e.dtype:
            raise AssertionError(f"dtype {o.dtype}, expected {e.dtype}")
        np.testing.assert_allclose(o, e, rtol=rtol, atol=atol, equal_nan=True)


def _atcpy_runner(case) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    from compiler.onnx_backend import AtcpyBackend

    rep = AtcpyBackend.prepare(case.model)
    return lambda inputs: list(rep.run(inputs))


def _reference_runner(case) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    from onnx.reference import ReferenceEvaluator

    ref = ReferenceEvaluator(case.model)
    names = [i.name for i in case.model.graph.input]
    return lambda inputs: list(ref.run(None, dict(zip(names, inputs))))


def _run_one(case, make_runner) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = make_runner(case)
            for inputs, expected in case.data_sets:
                _compare(run(list(inputs)), list(expected), case.rtol, case.atol)
    except Exception as e:  # noqa: BLE001 — a failing case is data, not a crash of the script
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
    return None


def op_of(case) -> str:
    return case.model.graph.node[0].op_type if case.model.graph.node else "?"


def run_cases(pattern: str = "", with_reference: bool = True) -> dict[str, Any]:
    cases = [c for c in collect_testcases() if c.kind == "node" and re.search(pattern, c.name)]
    results = {}
    for c in cases:
        ours = _run_one(c, _atcpy_runner)
        ref = _run_one(c, _reference_runner) if with_reference else None
        results[c.name] = {"op": op_of(c), "atcpy": ours, "reference": ref}
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", default="", help="regex on case names")
    ap.add_argument("--show-failures", type=int, default=3, help="errors shown per op")
    ap.add_argument("--json", default=None, help="write per-case results here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run_cases(args.filter)
    n = len(res)
    ours_ok = {k for k, v in res.items() if v["atcpy"] is None}
    ref_ok = {k for k, v in res.items() if v["reference"] is None}
    print(f"atcpy: {len(ours_ok)} passed, {n - len(ours_ok)} failed")
    print(f"onnx.reference: {len(ref_ok)} passed, {n - len(ref_ok)} failed")
    both = ours_ok & ref_ok
    pct = 100.0 * len(both) / max(len(ref_ok), 1)
    print(f"atcpy passes {len(both)} of the {len(ref_ok)} cases the reference passes ({pct:.1f}%)")
    by_op: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for k, v in res.items():
        if v["atcpy"] is not None:
            by_op[v["op"]].append((k, v["atcpy"]))
    print("\nfailures by op (ref-pass cases marked *):")
    for op, items in sorted(by_op.items(), key=lambda kv: -len(kv[1])):
        star = sum(1 for k, _ in items if k in ref_ok)
        print(f"  {op:<28} {len(items):4d} ({star} *)")
        for k, err in items[: args.show_failures]:
            print(f"      {'*' if k in ref_ok else ' '} {k}: {err}")
    print(f"\n{time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
