"""Seeded .om mutation fuzzer through `atcpy-run` in process (issue 17's Done-means).

    python -m bench.fuzz_om                 # 10,000 mutants over three models
    python -m bench.fuzz_om -n 300 --seed 1

Mutants come from tests/runtime/test_om_fuzz.py's `split`/`mutate`/`pack` (checksum
recomputed); each is written to a temp file and run by `runtime.cli.main` with a valid
input under a 10 s alarm. Prints the outcome histogram, uncaught exceptions (with the
first tracebacks), cases over the limit, MemoryErrors and the wall time.

A clean exit is split by whether the outputs equal the unmutated program's: "outputs
unchanged" (the mutation touched the report, a name, an annotation, an attribute set to
its default...; "one listed twice": an output entry duplicated, which ONNX and the
compiler allow) or "outputs changed", listed by what was mutated so each can be judged
a legal program (moved weight bytes, a window of the same output shape) or a loader bug.
Exit 5 is split by whether the mutation edited ``program.inputs`` (the valid input no
longer fits) or not; exit 1 messages are printed in full.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler import compile_model
from runtime.cli import main as run_main
from tests.runtime.test_om_fuzz import _pool_net, _tiny_cnn, mutate, pack, split

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 10


class Hang(BaseException):
    """Raised by the alarm; a BaseException so atcpy's `except Exception` cannot swallow it."""


def _alarm(signum, frame):
    raise Hang()


def _mlp() -> bytes:
    """Gemm, Softmax, Slice, Unsqueeze and Where over a fixed batch."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([0], np.int64), "st"),
             numpy_helper.from_array(np.array([8], np.int64), "en"),
             numpy_helper.from_array(np.array([1], np.int64), "ax")]
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Softmax", ["r"], ["s"], axis=1),
        helper.make_node("Slice", ["s", "st", "en", "ax"], ["sl"]),
        helper.make_node("Greater", ["sl", "x"], ["m"]),
        helper.make_node("Where", ["m", "sl", "x"], ["y"]),
    ]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return compile_model(model.SerializeToString()).to_bytes()


def _models(tmp: Path) -> dict[str, tuple[bytes, Path]]:
    """name -> (.om bytes, a valid input .npy)."""
    blobs = {"tiny_cnn": _tiny_cnn(), "pool_net": _pool_net(), "mlp": _mlp()}  # _tiny_cnn makes the example
    inputs = {"tiny_cnn": np.load(ROOT / "examples" / "tiny_cnn_input.npy"),
              "pool_net": np.ones((2, 3, 8, 8), np.float32), "mlp": np.ones((2, 8), np.float32)}
    out = {}
    for name, blob in blobs.items():
        npy = tmp / f"{name}_x.npy"
        np.save(npy, inputs[name])
        out[name] = (blob, npy)
    return out


def run_case(om: Path, npy: Path, outdir: Path) -> tuple[str, str | None, list[np.ndarray] | None]:
    """(outcome, message or traceback, the outputs of a clean exit in output order); outcome is
    'exit N', 'hang', 'MemoryError' or 'uncaught X'."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT_S)
    sink = io.StringIO()
    shutil.rmtree(outdir, ignore_errors=True)
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            rc = run_main([f"--model={om}", f"--input={npy}", f"--output={outdir}"])
        text = sink.getvalue().strip()
        outs = [np.load(m.group(1)) for m in re.finditer(r"-> (\S+\.npy)$", text, re.MULTILINE)] if rc == 0 else None
        return f"exit {rc}", (text[-500:] if rc != 0 else None), outs
    except Hang:
        return "hang", None, None
    except SystemExit as e:
        return f"exit {e.code}", None, None
    except MemoryError:
        return "MemoryError", traceback.format_exc(), None
    except Exception as e:  # noqa: BLE001 - what the fuzzer is looking for
        return f"uncaught {type(e).__name__}", traceback.format_exc(), None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and x.shape == y.shape and np.array_equal(
        x, y, equal_nan=x.dtype.kind in "fc") for x, y in zip(a, b))


def _pattern(what: str) -> str:
    """A mutation without its value and indices: what `_report` groups the changed-output cases by."""
    return "; ".join(re.sub(r"\d+", "#", m.split(" = ")[0]) for m in what.split("; "))


def classify(outcome: str, outs: list[np.ndarray] | None, base: list[np.ndarray], what: str) -> str:
    """The fuzzer's category: a clean exit says whether the outputs equal the unmutated program's,
    exit 5 whether the mutation touched the input signature (the valid input no longer fits)."""
    if outcome == "exit 0":
        outs = outs or []
        if _same(outs, base):
            return "exit 0, outputs unchanged"
        if len(outs) > len(base) and _same(outs[:len(base)], base) and all(
                any(_same([x], [y]) for y in base) for x in outs[len(base):]):
            return "exit 0, outputs unchanged, one listed twice"  # program.outputs[i] duplicated
        return "exit 0, outputs changed"
    if outcome == "exit 5":
        edited_inputs = any(m.startswith("program['inputs'") for m in what.split("; "))
        return "exit 5, input signature edited" if edited_inputs else "exit 5, other"
    return outcome


def fuzz(n: int, seed: int, show: int) -> None:
    os.environ["ATCPY_TRACEBACK"] = "1"  # internal errors propagate instead of becoming exit 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        models = _models(tmp)
        names = list(models)
        base: dict[str, list[np.ndarray]] = {}
        for name, (blob, npy) in models.items():
            (tmp / "ok.om").write_bytes(blob)
            outcome, _, base[name] = run_case(tmp / "ok.om", npy, tmp / "out")
            assert outcome == "exit 0", f"{name}: unmutated must run"
        t1 = time.perf_counter()
        rng, hist, slow, tbs, notes = random.Random(seed), Counter(), [], [], []
        changed: Counter = Counter()
        examples: dict[str, str] = {}  # pattern -> its first case
        for k in range(n):
            name = names[k % len(names)]
            blob, npy = models[name]
            h, i, data = split(blob)
            what = mutate(rng, h, i)
            if rng.random() < 0.3:
                what += "; " + mutate(rng, h, i)
            om = tmp / "m.om"
            om.write_bytes(pack(h, i, data))
            c0 = time.perf_counter()
            outcome, msg, outs = run_case(om, npy, tmp / "out")
            took = time.perf_counter() - c0
            cat = classify(outcome, outs, base[name], what)
            hist[cat] += 1
            if outcome == "hang" or took > LIMIT_S:
                slow.append(f"{name} #{k} {what} ({took:.1f}s)")
            if cat == "exit 0, outputs changed":
                changed[_pattern(what)] += 1
                examples.setdefault(_pattern(what), f"{name} #{k} {what}")
            elif msg is not None and outcome in ("exit 1", "exit 5"):
                notes.append(f"[{cat}] {name} #{k} {what}: {msg}")
            elif msg is not None and outcome != "exit 4":
                tbs.append(f"--- {name} #{k} {what}\n{msg}")
        _report(n, hist, slow, tbs + notes, (changed, examples), show, time.perf_counter() - t0, time.perf_counter() - t1)


def _report(n, hist, slow, tbs, changed, show, wall, fuzz_wall) -> None:
    print(f"=== bench/fuzz_om: {n} mutants over tiny_cnn, pool_net, mlp ===")
    for outcome, c in sorted(hist.items()):
        print(f"  {outcome:<44} {c}")
    uncaught = sum(c for o, c in hist.items() if o.startswith("uncaught"))
    print(f"uncaught non-atcpy exceptions: {uncaught}")
    print(f"cases over {LIMIT_S}s: {len(slow)}")
    for s in slow[:show]:
        print(f"  {s}")
    print(f"MemoryErrors: {hist.get('MemoryError', 0)}")
    counts, examples = changed
    if counts:
        print("exit 0 with changed outputs, by what was mutated (the first case of each):")
        for pattern, c in counts.most_common(show):
            print(f"  {c:5d}  {pattern}\n         e.g. {examples[pattern]}")
    print("first tracebacks, then exit-1 and exit-5 messages:" if tbs else "")
    for tb in tbs[:show]:
        print(tb[-3000:])
    print(f"wall time: {wall:.1f}s total, {fuzz_wall:.1f}s fuzzing ({n / max(fuzz_wall, 1e-9):.1f} cases/s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=10_000, help="mutants in all (round-robin over the models)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--show", type=int, default=5, help="tracebacks / slow cases to print")
    a = p.parse_args(argv)
    fuzz(a.n, a.seed, a.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
