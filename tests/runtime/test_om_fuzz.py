"""An .om loader that trusts nothing: a seeded fuzzer over edited headers and weight
indexes (checksum recomputed), plus the regressions issue 17 named.

Each mutant is loaded and, when the loader accepts it, run once in process under a
time limit; only atcpy's own errors (`runtime.errors`, `ir.errors.AtcError`) may
escape, and nothing may hang.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import compile_model
from ir.errors import AtcError
from runtime.cli import main as run_main
from runtime.errors import InvalidOmError, RuntimeFailure
from runtime.om import Executable, np_dtype
from runtime.session import Session

ROOT = Path(__file__).resolve().parents[2]
PREFIX = struct.Struct("<8sII3Q24x")
N_MUTANTS = 500  # per model
CASE_BUDGET_S = 5.0


# --- the two models ----------------------------------------------------------------------
def _tiny_cnn() -> bytes:
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_example.py")], check=True, capture_output=True)
    return compile_model(str(ROOT / "examples" / "tiny_cnn.onnx")).to_bytes()


def _pool_net() -> bytes:
    """Pooling, Transpose, Reshape, Concat, ReduceMean and Gather over a symbolic batch."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0, 2], np.int64), "idx"),
             numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["c"], ["q"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["p", "q"], ["pq"], axis=1),
        helper.make_node("Transpose", ["pq"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("ReduceMean", ["t"], ["m"], axes=[3], keepdims=0),
        helper.make_node("Gather", ["m", "idx"], ["g"], axis=1),
        helper.make_node("Reshape", ["t", "shape"], ["r"]),
    ]
    g = helper.make_graph(nodes, "pool_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("r", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return compile_model(model.SerializeToString(), dim_range="N:1~4").to_bytes()


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {"tiny_cnn": _tiny_cnn(), "pool_net": _pool_net()}


# --- editing an .om ------------------------------------------------------------------------
def split(blob: bytes) -> tuple[Any, Any, bytes]:
    """(header JSON, index JSON, weight data) of an .om image, the JSON undecoded."""
    _, _, _, hlen, ilen, dlen = PREFIX.unpack(blob[:64])
    istart = 64 + hlen + (-hlen % 64)
    dstart = istart + ilen + (-ilen % 64)
    return json.loads(blob[64:64 + hlen]), json.loads(blob[istart:istart + ilen]), blob[dstart:dstart + dlen]


def pack(header: Any, index: Any, data: bytes, *, raw_header: bytes | None = None) -> bytes:
    """An .om image with a valid frame and checksum around whatever JSON it is given."""
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    i = json.dumps(index).encode()
    body = b"".join([PREFIX.pack(b"ATCPYOM\0", 1, 0, len(h), len(i), len(data)), h, b"\0" * (-len(h) % 64),
                     i, b"\0" * (-len(i) % 64), data])
    return body + hashlib.sha256(body).digest()


def edit(blob: bytes, fn) -> bytes:
    h, i, d = split(blob)
    fn(h, i)
    return pack(h, i, d)


VALUES: list[Any] = [-1, 0, 1, 2, -(2**31), 2**31 - 1, 4294967297, 10**15, 2**63, -(2**63) - 1, 1.5, float("1e308"),
                     True, None, "", "x", "?", "N+", "((((N))))", [], [0], [-1, -1], [4294967297, 2], {}, {"a": 1},
                     {"$weight": "nope"}, {"$float": "nan"}, {"$float": [1]}, ["a", 0], ["w", "nope"], ["a", -1],
                     ["a", 10**9], "f64", "str", "bf16", [[[[]]]], json.loads("[" * 80 + "]" * 80)]


def _nodes(x: Any, path: tuple = ()) -> list[tuple]:
    """Every (path, value) in a JSON tree (paths of keys and indices)."""
    out = [(path, x)]
    if isinstance(x, dict):
        for k, v in x.items():
            out += _nodes(v, (*path, k))
    elif isinstance(x, list):
        for k, v in enumerate(x):
            out += _nodes(v, (*path, k))
    return out


def _at(root: Any, path: tuple) -> Any:
    for p in path:
        root = root[p]
    return root


def mutate(rng: random.Random, header: dict, index: dict) -> str:
    """Mutate `header` or `index` in place; returns what it did."""
    root, label = (index, "index") if rng.random() < 0.15 else (header.get("program"), "program")
    if label == "program" and (rng.random() < 0.1 or not isinstance(root, dict)):
        root, label = header, "header"
    paths = [p for p, _ in _nodes(root) if p]
    if not paths:
        return "nothing"
    path = rng.choice(paths)
    parent, key = _at(root, path[:-1]), path[-1]
    r = rng.random()
    if label == "program" and r < 0.06:
        steps = root.get("steps")
        if isinstance(steps, list) and len(steps) > 1:
            a, b = rng.sample(range(len(steps)), 2)
            steps[a], steps[b] = steps[b], steps[a]
            return f"swap steps {a} {b}"
    if r < 0.2 and isinstance(parent, dict):
        del parent[key]
        return f"{label}{list(path)} deleted"
    if r < 0.27 and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
        return f"{label}{list(path)} duplicated"
    v = rng.choice(VALUES)
    if isinstance(parent[key], int) and not isinstance(parent[key], bool) and rng.random() < 0.4:
        v = parent[key] + rng.choice([-1, 1, -(10**6), 10**6, 2**32])
    parent[key] = copy.deepcopy(v)
    return f"{label}{list(path)} = {v!r}"


# --- running a mutant ---------------------------------------------------------------------
class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def feeds_for(sess: Session) -> dict[str, np.ndarray]:
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in i.shape]
        dt = np_dtype(i.dtype)
        feeds[i.name] = np.full(shape, "a", object) if dt == object else np.ones(shape, dt)
    return feeds


def load_and_run(blob: bytes) -> BaseException | None:
    """None when it loaded and ran; the atcpy error it raised; anything else propagates."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_BUDGET_S)
    try:
        sess = Session(Executable.load(blob))
        sess.run(None, feeds_for(sess))
        return None
    except (RuntimeFailure, AtcError) as e:
        return e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_fuzz_edited_om_files_raise_only_atcpy_errors(models):
    """No mutant escapes with a non-atcpy exception, and none fails as a generic runtime
    error (exit 1): what the loader accepts, the runtime runs."""
    t0, n, rejected, bugs, exit1 = time.perf_counter(), 0, 0, [], []
    for name, blob in models.items():
        assert load_and_run(blob) is None, f"{name}: the unmutated model must run"
        rng = random.Random(17)
        for k in range(N_MUTANTS):
            h, i, d = split(blob)
            what = mutate(rng, h, i)
            if rng.random() < 0.3:
                what += "; " + mutate(rng, h, i)
            try:
                err = load_and_run(pack(h, i, d))
            except Exception as e:  # noqa: BLE001 - what the fuzzer is looking for
                bugs.append(f"{name} #{k} {what}: {type(e).__name__}: {e}"[:400])
                continue
            n += 1
            rejected += isinstance(err, InvalidOmError)
            if getattr(err, "exit_code", None) == 1:
                exit1.append(f"{name} #{k} {what}: {type(err).__name__}: {err}"[:400])
    took = time.perf_counter() - t0
    print(f"{2 * N_MUTANTS} mutants in {took:.1f}s; {rejected} rejected at load; {len(bugs)} escaped; "
          f"{len(exit1)} exit 1")
    assert not bugs, "\n".join(bugs[:30])
    assert not exit1, "\n".join(exit1[:30])


# --- regressions ---------------------------------------------------------------------------
def _expect_invalid(blob: bytes, *words: str) -> None:
    with pytest.raises(InvalidOmError) as e:
        Executable.load(blob)
    for w in words:
        assert w in str(e.value)


def test_arena_beyond_memory_is_rejected_before_allocation(models):
    def f(h, i):
        h["memory"]["arena_bytes"] = 10**15
    _expect_invalid(edit(models["tiny_cnn"], f), "memory.arena_bytes")


def test_huge_pooling_window_is_rejected(models):
    def f(h, i):
        st = next(s for s in h["program"]["steps"] if s["kernel"] == "MaxPool")
        st["attrs"]["kernel_shape"] = [4294967297, 2]
    _expect_invalid(edit(models["tiny_cnn"], f), "MaxPool", "kernel_shape")


def test_reversed_steps_are_rejected(models):
    def f(h, i):
        h["program"]["steps"].reverse()
    _expect_invalid(edit(models["tiny_cnn"], f), "before any step writes it")


def test_deep_nesting_is_rejected_without_recursing(models):
    h, i, d = split(models["tiny_cnn"])
    raw = json.dumps(h).encode()
    deep = raw[:-1] + b', "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _expect_invalid(pack(None, i, d, raw_header=deep), "nested")
    _expect_invalid(pack(None, i, d, raw_header=b"[" * 100_000), "nested")


def test_host_limit_is_settable(models, monkeypatch):
    Executable.load(models["tiny_cnn"])
    with pytest.raises(InvalidOmError, match="host limit"):
        Executable.load(models["tiny_cnn"], max_bytes=1000)
    monkeypatch.setenv("ATCPY_OM_MAX_BYTES", "1000")
    with pytest.raises(InvalidOmError, match="ATCPY_OM_MAX_BYTES"):
        Executable.load(models["tiny_cnn"])


@pytest.mark.parametrize("case", ["arena", "window", "reverse", "weight"])
def test_cli_exits_4_on_an_invalid_program(models, tmp_path, case, capsys):
    def f(h, i):
        if case == "arena":
            h["memory"]["arena_bytes"] = 10**15
        elif case == "window":
            next(s for s in h["program"]["steps"] if s["kernel"] == "MaxPool")["attrs"]["kernel_shape"] = [2**32 + 1, 2]
        elif case == "reverse":
            h["program"]["steps"].reverse()
        else:
            next(iter(i.values()))["offset"] = -64
    om = tmp_path / "bad.om"
    om.write_bytes(edit(models["tiny_cnn"], f))
    np.save(tmp_path / "x.npy", np.load(ROOT / "examples" / "tiny_cnn_input.npy"))
    assert run_main([f"--model={om}", f"--input={tmp_path / 'x.npy'}", f"--output={tmp_path / 'out'}"]) == 4
    from compiler.cli import main as atc_main

    assert atc_main(["--mode=6", f"--om={om}"]) == 4
    assert atc_main(["--mode=1", f"--om={om}", f"--json={tmp_path / 'x.json'}"]) == 4
    assert "invalid .om" in capsys.readouterr().err


def test_mode6_exits_4_on_an_unreadable_report(models, tmp_path):
    from compiler.cli import main as atc_main

    def f(h, i):
        h["report"]["tiling"] = [1]
    om = tmp_path / "bad_report.om"
    om.write_bytes(edit(models["tiny_cnn"], f))
    assert atc_main(["--mode=6", f"--om={om}"]) == 4


def test_pool_net_is_what_the_fuzzer_thinks(models):
    exe = Executable.load(models["pool_net"])
    kernels = {s["kernel"] for s in exe.program["steps"]}
    assert {"MaxPool", "AveragePool"} <= kernels
    assert exe.program.get("dims")

