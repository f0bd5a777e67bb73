"""Malformed and semantically invalid ONNX models through `atcpy` and onnxruntime (issue 17).

    python -m bench.fuzz_onnx              # 4 base models x 150 seeded mutations + hostile.py's cases
    python -m bench.fuzz_onnx -n 50 --seed 3

Every model is compiled in process by `compiler.cli.main` (exit code recorded) and loaded
by `onnxruntime.InferenceSession` (then run once on ones). Prints the atcpy exit-1 cases
(there should be none), how many onnxruntime rejects and how atcpy treats those, and the
wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import multiprocessing
import random
import re
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.cli import main as atc_main
from tests.frontend.hostile import CASES, function_bomb

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 30
F = TensorProto.FLOAT


class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang()


# --- valid base models ----------------------------------------------------------------------
def _finish(nodes, name, inputs, outputs, inits) -> onnx.ModelProto:
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _conv_net() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([0, 2], np.int64), "idx"),
             numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["c"], ["p"], name="avg", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["c"], ["q"], name="max", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["p", "q"], ["pq"], name="cat", axis=1),
        helper.make_node("Transpose", ["pq"], ["t"], name="tr", perm=[0, 1, 3, 2]),
        helper.make_node("ReduceMean", ["t"], ["m"], name="mean", axes=[3], keepdims=0),
        helper.make_node("Gather", ["m", "idx"], ["g"], name="gather", axis=1),
        helper.make_node("Reshape", ["t", "shape"], ["r"], name="reshape"),
    ]
    return _finish(nodes, "conv_net", [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
                   [helper.make_tensor_value_info("g", F, None), helper.make_tensor_value_info("r", F, None)], inits)


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([0], np.int64), "st"),
             numpy_helper.from_array(np.array([8], np.int64), "en"),
             numpy_helper.from_array(np.array([1], np.int64), "ax")]
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="gemm", transB=0),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Softmax", ["r"], ["s"], name="softmax", axis=1),
        helper.make_node("Slice", ["s", "st", "en", "ax"], ["sl"], name="slice"),
        helper.make_node("Greater", ["sl", "x"], ["m"], name="gt"),
        helper.make_node("Where", ["m", "sl", "x"], ["y"], name="where"),
    ]
    return _finish(nodes, "mlp", [helper.make_tensor_value_info("x", F, [2, 8])],
                   [helper.make_tensor_value_info("y", F, None)], inits)


def _seq() -> onnx.ModelProto:
    """MatMul, LayerNormalization, Split, Squeeze, Cast, ReduceSum, Unsqueeze, Expand."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(6, np.float32), "g"),
             numpy_helper.from_array(np.array([3, 3], np.int64), "sp"),
             numpy_helper.from_array(np.array([2], np.int64), "ax2"),
             numpy_helper.from_array(np.array([2, 4, 3], np.int64), "es")]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("LayerNormalization", ["h", "g"], ["n"], name="ln", axis=-1, epsilon=1e-5),
        helper.make_node("Split", ["n", "sp"], ["a", "b"], name="split", axis=2),
        helper.make_node("Mul", ["a", "b"], ["ab"], name="mul"),
        helper.make_node("ReduceSum", ["ab", "ax2"], ["rs"], name="rsum", keepdims=1),
        helper.make_node("Expand", ["rs", "es"], ["e"], name="expand"),
        helper.make_node("Cast", ["e"], ["y"], name="cast", to=F),
    ]
    return _finish(nodes, "seq", [helper.make_tensor_value_info("x", F, [2, 4, 6])],
                   [helper.make_tensor_value_info("y", F, None)], inits)


def base_models() -> dict[str, onnx.ModelProto]:
    tiny = ROOT / "examples" / "tiny_cnn.onnx"
    if not tiny.exists():
        import subprocess

        subprocess.run([sys.executable, str(ROOT / "examples" / "make_example.py")], check=True, capture_output=True)
    return {"tiny_cnn": onnx.load(str(tiny)), "conv_net": _conv_net(), "mlp": _mlp(), "seq": _seq()}


# --- mutations -------------------------------------------------------------------------------
INTS = [-(2**31), -100, -5, -1, 0, 1, 2, 3, 7, 99, 2**31 - 1, 2**40]
DTYPES = [0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 23, 99, 999]
UNKNOWN_OPS = ["NoSuchOp", "relu", "Conv2D", "", "MatMulInteger16", "Relu "]


def _node(rng, m):
    return rng.choice(list(m.graph.node)) if m.graph.node else None


def m_attr_value(rng, m) -> str:
    n = _node(rng, m)
    if n is None or not n.attribute:
        return m_add_attr(rng, m)
    a = rng.choice(list(n.attribute))
    if a.type == onnx.AttributeProto.INT:
        a.i = rng.choice(INTS)
    elif a.type == onnx.AttributeProto.INTS and a.ints:
        k = rng.randrange(len(a.ints))
        a.ints[k] = rng.choice(INTS)
        if rng.random() < 0.3:
            a.ints.append(rng.choice(INTS))
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30])
    else:
        a.i = rng.choice(INTS)
    return f"{n.name}.{a.name} value"


def _drop_attr(rng, m):
    """A random node with its random attribute removed: (node, the attribute's name), or None."""
    n = _node(rng, m)
    if n is None or not n.attribute:
        return None
    k = rng.randrange(len(n.attribute))
    name = n.attribute[k].name
    del n.attribute[k]
    return n, name


def m_attr_type(rng, m) -> str:
    picked = _drop_attr(rng, m)
    if picked is None:
        return m_add_attr(rng, m)
    n, name = picked
    n.attribute.append(helper.make_attribute(name, rng.choice([1.5, "str", [1.0, 2.0], [0], 3, ["a"]])))
    return f"{n.name}.{name} retyped"


def m_del_attr(rng, m) -> str:
    picked = _drop_attr(rng, m)
    if picked is None:
        return m_add_attr(rng, m)
    return f"{picked[0].name}.{picked[1]} deleted"


def m_add_attr(rng, m) -> str:
    n = _node(rng, m)
    name = rng.choice(["axis", "alpha", "bogus", "perm", "kernel_shape", "to", "group"])
    n.attribute.append(helper.make_attribute(name, rng.choice([5, -9, [0, 0], 2.5, "x", [99, 99]])))
    return f"{n.name}.{name} added"


def m_axis(rng, m) -> str:
    n = _node(rng, m)
    n.attribute.append(helper.make_attribute("axis", rng.choice([-99, -5, 4, 5, 42, 2**40])))
    names = [a.name for a in n.attribute]
    if names.count("axis") > 1:
        del n.attribute[names.index("axis")]
    return f"{n.name}.axis bad"


def m_op_type(rng, m) -> str:
    n = _node(rng, m)
    old = n.op_type
    n.op_type = rng.choice(UNKNOWN_OPS + [_node(rng, m).op_type, "Relu", "Add", "Softmax", "Conv", "Gemm"])
    if rng.random() < 0.2:
        n.domain = rng.choice(["com.nosuch", "ai.onnx.ml", "com.microsoft"])
    return f"{n.name} {old}->{n.op_type}"


def m_opset(rng, m) -> str:
    if rng.random() < 0.5:
        m.opset_import[0].version = rng.choice([0, 1, 5, 7, 11, 13, 21, 23, 99, -1])
        return f"opset {m.opset_import[0].version}"
    m.ir_version = rng.choice([0, 1, 2, 3, 4, 11, 12, 99, -1])
    return f"ir_version {m.ir_version}"


def m_dup_name(rng, m) -> str:
    a, b = _node(rng, m), _node(rng, m)
    if rng.random() < 0.5 and a.output and b.output:
        b.output[0] = a.output[0]
        return f"{b.name} output := {a.output[0]}"
    if m.graph.initializer and rng.random() < 0.5:
        m.graph.initializer.append(copy.deepcopy(m.graph.initializer[0]))
        return "duplicate initializer"
    m.graph.input.append(copy.deepcopy(m.graph.input[0]))
    return "duplicate graph input"


def m_dtype(rng, m) -> str:
    if m.graph.initializer and rng.random() < 0.5:
        t = rng.choice(list(m.graph.initializer))
        t.data_type = rng.choice(DTYPES)
        return f"initializer {t.name} dtype {t.data_type}"
    vi = rng.choice(list(m.graph.input) + list(m.graph.output))
    vi.type.tensor_type.elem_type = rng.choice(DTYPES)
    return f"{vi.name} elem_type {vi.type.tensor_type.elem_type}"


def m_shape(rng, m) -> str:
    vi = m.graph.input[0]
    dims = vi.type.tensor_type.shape.dim
    r = rng.random()
    if r < 0.25 and dims:
        del dims[rng.randrange(len(dims))]
    elif r < 0.45:
        dims.add().dim_value = rng.choice([1, 2, 3])
    elif dims:
        d = dims[rng.randrange(len(dims))]
        if rng.random() < 0.2:
            d.dim_param = rng.choice(["N", "", "??"])
        else:
            d.dim_value = rng.choice([0, -1, 1, 5, 7, 10**6, 2**40])
    return f"input shape {[d.dim_value or d.dim_param for d in dims]}"


def m_init(rng, m) -> str:
    if not m.graph.initializer:
        return m_shape(rng, m)
    t = rng.choice(list(m.graph.initializer))
    r = rng.random()
    if r < 0.35 and t.dims:
        t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 3, 5, 2**31, -1])
        return f"initializer {t.name} dims {list(t.dims)}"
    if r < 0.6:
        arr = numpy_helper.to_array(t)
        t.ClearField("float_data")
        t.ClearField("int64_data")
        t.raw_data = arr.tobytes()[: rng.choice([0, 1, 3, max(arr.nbytes - 4, 0)])]
        return f"initializer {t.name} raw_data truncated"
    if r < 0.8:
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        t.external_data.add(key="location", value=rng.choice(["../../etc/passwd", "nosuch.bin", "/dev/zero"]))
        return f"initializer {t.name} external"
    m.graph.initializer.remove(t)
    return f"initializer {t.name} removed"


def m_graph(rng, m) -> str:
    nodes = m.graph.node
    r = rng.random()
    if r < 0.3 and len(nodes) > 1:
        k = rng.randrange(len(nodes))
        del nodes[k]
        return f"node {k} cut"
    if r < 0.55 and len(nodes) > 1:
        a, b = rng.sample(range(len(nodes)), 2)
        na, nb = copy.deepcopy(nodes[a]), copy.deepcopy(nodes[b])
        nodes[a].CopyFrom(nb)
        nodes[b].CopyFrom(na)
        return f"nodes {a},{b} swapped"
    n = _node(rng, m)
    if r < 0.7 and n.input:
        n.input[rng.randrange(len(n.input))] = rng.choice(["nowhere", "", n.output[0] if n.output else "z"])
        return f"{n.name} input rewired"
    if r < 0.8 and n.input:
        del n.input[rng.randrange(len(n.input))]
        return f"{n.name} input removed"
    if r < 0.9:
        n.input.append(rng.choice(["x", "nowhere", ""]))
        return f"{n.name} extra input"
    m.graph.output.append(helper.make_tensor_value_info(rng.choice(["nowhere", "x"]), F, None))
    return "bogus graph output"


MUTATIONS = [m_attr_value, m_attr_type, m_del_attr, m_add_attr, m_axis, m_op_type, m_opset, m_dup_name,
             m_dtype, m_shape, m_init, m_graph]


def _apply(rng, m) -> str:
    fn = rng.choice(MUTATIONS)
    try:
        return fn(rng, m)
    except (ValueError, AttributeError, IndexError, TypeError) as e:  # a mutation that does not fit this model
        return f"{fn.__name__} skipped ({type(e).__name__})"


def mutants(n_per_model: int, seed: int):
    """(label, model bytes): seeded mutants of the base models, then hostile.py's cases."""
    rng = random.Random(seed)
    for name, base in base_models().items():
        yield f"BASE {name}", base.SerializeToString()
        for k in range(n_per_model):
            m = copy.deepcopy(base)
            what = [_apply(rng, m) for _ in range(1 if rng.random() < 0.75 else 2)]
            yield f"{name} #{k} {'; '.join(what)}", m.SerializeToString()
    for name, build in CASES.items():
        yield f"hostile {name}", build()
    for depth in (8, 14):
        yield f"hostile function_bomb({depth})", function_bomb(depth)


# --- running -------------------------------------------------------------------------------
def run_atcpy(path: Path, out: Path) -> tuple[int | str, str]:
    """(exit code or 'hang', last stderr line)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT_S)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            rc = atc_main([f"--model={path}", "--framework=5", "--soc_version=Ascend310P3", f"--output={out}"])
    except Hang:
        rc = "hang"
    except SystemExit as e:
        rc = e.code
    except BaseException as e:  # noqa: BLE001 - should not happen: main catches Exception
        rc = f"raised {type(e).__name__}"
        sink.write(f"{type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    lines = sink.getvalue().strip().splitlines()
    return rc, (lines[-1] if lines else "")[:300]


def _feeds(sess) -> dict[str, np.ndarray]:
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
             "tensor(double)": np.float64, "tensor(float16)": np.float16, "tensor(bool)": np.bool_}
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d >= 0 else 2 for d in (i.shape or [])]
        feeds[i.name] = np.ones(shape, types.get(i.type, np.float32))
    return feeds


def run_ort(data: bytes) -> str:
    """'ok', 'load' (InferenceSession rejects) or 'run' (loads, fails running on ones)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any rejection counts
        return "load"
    try:
        sess.run(None, _feeds(sess))
    except Exception:  # noqa: BLE001
        return "run"
    return "ok"


def _ort_worker(conn, mem_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    while True:
        data = conn.recv()
        try:
            conn.send(run_ort(data))
        except MemoryError:
            conn.send("MemoryError")


class OrtProcess:
    """onnxruntime in a child process (it can crash on hostile models): 'crash' when it dies."""

    def __init__(self, mem_bytes: int = 6 << 30) -> None:
        self.mem, self.proc, self.conn = mem_bytes, None, None
        self.ctx = multiprocessing.get_context("fork")

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_ort_worker, args=(child, self.mem), daemon=True)
        self.proc.start()
        child.close()  # else a child that dies mid-reply leaves recv() waiting forever, not EOFError

    def __call__(self, data: bytes) -> str:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send(data)
        if self.conn.poll(LIMIT_S):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        self.close()
        return "crash"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None


def fuzz(n_per_model: int, seed: int, verbose: bool = False) -> None:
    t0 = time.perf_counter()
    rows, ort = [], OrtProcess()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for label, data in mutants(n_per_model, seed):
            path = tmp / "m.onnx"
            if verbose:
                print(f"... {label}", file=sys.stderr, flush=True)
            path.write_bytes(data)
            rc, msg = run_atcpy(path, tmp / "out")
            rows.append((label, rc, msg, ort(data)))
    bases = [r for r in rows if r[0].startswith("BASE ")]
    print("base models (atcpy exit, onnxruntime): " + ", ".join(f"{r[0][5:]}=({r[1]}, {r[3]})" for r in bases))
    ort.close()
    report([r for r in rows if not r[0].startswith("BASE ")], time.perf_counter() - t0)


def report(rows, wall: float) -> None:
    print(f"=== bench/fuzz_onnx: {len(rows)} models ===")
    hist = Counter(r[1] for r in rows)
    print("atcpy exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(hist.items(), key=str)))
    print("onnxruntime: " + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(r[3] for r in rows).items())))
    bad = [r for r in rows if r[1] not in (0, 2, 3)]
    print(f"atcpy exit 1 (or other non 0/2/3): {len(bad)}")
    for label, rc, msg, _ in bad:
        print(f"  [{rc}] {label}: {msg}")
    crashed = [r for r in rows if r[3] not in ("ok", "load", "run")]
    print(f"onnxruntime crashed / over {LIMIT_S}s / MemoryError (in a child process): {len(crashed)}")
    for label, rc, msg, o in crashed:
        print(f"  ort {o}; atcpy [{rc}] {label}: {msg}")
    rej = [r for r in rows if r[3] == "load"]
    rej3 = [r for r in rej if r[1] == 3]
    print(f"onnxruntime rejects at load: {len(rej)}; of those atcpy exits 3: {len(rej3)}")
    for label, rc, msg, _ in (r for r in rej if r[1] != 3):
        print(f"  atcpy [{rc}] {label}: {msg}")
    run_fail = [r for r in rows if r[3] == "run"]
    print(f"onnxruntime loads but fails to run on ones: {len(run_fail)}; of those atcpy exits 3: "
          f"{sum(r[1] == 3 for r in run_fail)}, exits 0: {sum(r[1] == 0 for r in run_fail)}")
    for label, rc, msg, _ in (r for r in run_fail if r[1] == 0):
        print(f"  atcpy [0] {label}")
    ok = [r for r in rows if r[3] == "ok"]
    print(f"onnxruntime loads and runs: {len(ok)}; of those atcpy exits 0: {sum(r[1] == 0 for r in ok)}, "
          f"3: {sum(r[1] == 3 for r in ok)}")
    groups: dict[str, list[tuple]] = {}
    for r in (r for r in ok if r[1] != 0):
        groups.setdefault(_reason(r[2]), []).append(r)
    for key, rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(rs)} x atcpy [{rs[0][1]}] {key}  (e.g. {rs[0][0]})")
    print(f"wall time: {wall:.1f}s ({len(rows) / max(wall, 1e-9):.1f} models/s)")


def _reason(msg: str) -> str:
    """An error line with names and numbers blanked, to group the same rejection."""
    msg = msg.split("unsupported model: ", 1)[-1]
    return re.sub(r"'[^']*'|\d+", "_", msg)[:100]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=150, help="mutants per base model (4 base models)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("-v", "--verbose", action="store_true", help="name each model on stderr before running it")
    a = p.parse_args(argv)
    fuzz(a.n, a.seed, a.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
