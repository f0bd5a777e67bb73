"""Compile time against graph size, and INT8 compile time, beside onnxruntime's session creation.

    python bench/compile_time.py [--nodes 1000,4000,16000,100000] [--width 16]
                                 [--int8 /tmp/atcpy-modern/mobilenet_v2.onnx,...] [--samples 16]

Size scaling: a chain of ``nodes / 3`` blocks ``Relu(Add(MatMul(x, W_i), b_i))``
([1, width] activations, a distinct [width, width] weight per block), written as
ONNX; for each size it prints atcpy's default compile (``compile_model``, wall
seconds), microseconds per node, and onnxruntime's ``InferenceSession`` creation
(default graph optimizations, 1 thread) on the same file.  Per-node cost should be
flat as the graph grows.

INT8: each ``--int8`` model compiled with ``allow_quantize`` and ``--samples``
random-normal calibration inputs (seeded; ``precision_mode=allow_quantize``), beside its float compile.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def chain_model(nodes: int, width: int, seed: int = 0) -> onnx.ModelProto:
    """``nodes // 3`` MatMul/Add/Relu blocks on a [1, width] activation."""
    rng = np.random.default_rng(seed)
    inits, graph_nodes, x = [], [], "x"
    for i in range(max(1, nodes // 3)):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = rng.standard_normal(width).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        graph_nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                        helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                        helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        x = f"r{i}"
    g = helper.make_graph(graph_nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, width])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _ort_session_s(path: str) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    t0 = time.perf_counter()
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return time.perf_counter() - t0


def scaling(sizes: list[int], width: int) -> None:
    from compiler import compile_model

    print(f"{'nodes':>8} {'atcpy s':>9} {'us/node':>8} {'ort s':>8} {'us/node':>8}")
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            path = str(Path(d) / f"chain{n}.onnx")
            onnx.save(chain_model(n, width), path)
            nodes = 3 * max(1, n // 3)
            t0 = time.perf_counter()
            compile_model(path, soc_version="Ascend310P3")
            atc = time.perf_counter() - t0
            ort_s = _ort_session_s(path)
            print(f"{nodes:>8} {atc:>9.2f} {1e6 * atc / nodes:>8.1f} {ort_s:>8.2f} {1e6 * ort_s / nodes:>8.1f}",
                  flush=True)


def int8(paths: list[str], samples: int) -> None:
    from compiler import compile_model
    from compiler.frontend import import_onnx

    print(f"\n{'model':<32} {'float s':>8} {'int8 s':>8}  ({samples} calibration samples)")
    with tempfile.TemporaryDirectory() as d:
        for p in paths:
            g = import_onnx(p)
            rng = np.random.default_rng(0)
            data = {v.name: rng.standard_normal((samples, *[s if isinstance(s, int) else 1 for s in v.type.shape[1:]]))
                    .astype(np.float32) for v in g.inputs}
            npz = str(Path(d) / "calib.npz")
            np.savez(npz, **data)
            t0 = time.perf_counter()
            compile_model(p, soc_version="Ascend310P3")
            fl = time.perf_counter() - t0
            t0 = time.perf_counter()
            compile_model(p, soc_version="Ascend310P3", precision_mode="allow_quantize", calibration_data=npz)
            q = time.perf_counter() - t0
            print(f"{Path(p).stem:<32} {fl:>8.1f} {q:>8.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="1000,4000,16000,100000", help="graph sizes (nodes)")
    ap.add_argument("--width", type=int, default=16, help="activation width of the chain")
    ap.add_argument("--int8", default="", help="comma-separated ONNX models to compile in INT8")
    ap.add_argument("--samples", type=int, default=16, help="calibration samples for --int8")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.nodes.split(",") if s]
    if sizes:
        scaling(sizes, args.width)
    if args.int8:
        int8([p for p in args.int8.split(",") if p], args.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
