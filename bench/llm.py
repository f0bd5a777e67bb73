"""Decoder LLMs: first-token latency and decode tokens/s of atcpy's Generator against
onnxruntime, in one run.

    python bench/llm.py [--models gpt2,llama,qwen2,llama-medium] [--prompt 64] [--new 64]
                        [--repeat 3] [--dir DIR] [--profile] [--variants W8A16,W4A16,W4A16+kv8,fp16]

Each model is one of `tests.llm.decoders`' optimum exports (built from a config with
random init; exported into ``--dir`` on first use, reused after): the tiny GPT-2,
LLaMA (GQA, RoPE) and Qwen2 (2 layers, hidden 64) and ``llama-medium`` (4 layers,
hidden 512, 8 query / 4 KV heads, vocab 8192).  atcpy compiles it with a
``dim_range`` covering prompt + new tokens and generates greedily with
`runtime.Generator`; onnxruntime runs the same ONNX with the loop a user writes:
prefill with an empty past, then one token at a time, each run's ``present`` fed
back as the next ``past``.  Two onnxruntime loops are timed -- plain ``run`` with
numpy arrays, and IOBinding with the presents kept as OrtValues and bound as the
next pasts (no copy to numpy) -- and for each figure the faster loop is the one
compared against (``ort loop`` names it: first token / decode).
Greedy tokens must be equal between the engines; a mismatch is printed with its
first position.

One thread each: OMP/OpenBLAS/MKL are limited to 1 thread before numpy is imported
and onnxruntime gets ``intra_op_num_threads=1``.  Engines run interleaved, each
figure is the median over ``--repeat`` generations.  ``steps/token`` is how many
runtime steps one atcpy decode step runs (``len(Session._steps)``).

``--variants`` then times other compiles of the same models against atcpy fp32 in one
run (weight-only ``W8A16``/``W4A16``, ``+kv8`` for the INT8 KV cache, ``fp16``): decode
tok/s and its ratio to fp32, weight bytes, and the share of greedy tokens equal to fp32's.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # before numpy (and onnxruntime) start their pools

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALL = ("gpt2", "llama", "qwen2", "llama-medium")


def _model(kind: str, out_dir: Path) -> Path:
    path = out_dir / f"{kind}.onnx"
    if not path.exists():
        from tests.llm.decoders import export_decoder

        t0 = time.perf_counter()
        export_decoder(kind, out_dir)
        print(f"  exported {kind} in {time.perf_counter() - t0:.1f} s -> {path}", flush=True)
    return path


class OrtLoop:
    """The loop an onnxruntime user writes for a decoder with past/present."""

    def __init__(self, path: Path, binding: bool) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.ort = ort
        self.binding = binding
        self.inputs = {i.name: i for i in self.sess.get_inputs()}
        self.pasts = [n for n in self.inputs if n.startswith("past_key_values.")]
        self.presents = [n.replace("past_key_values.", "present.") for n in self.pasts]
        self.stats: tuple[float, float] = (0.0, 0.0)

    def _empty_past(self) -> dict[str, np.ndarray]:
        out = {}
        for n in self.pasts:
            shape = [1 if d == "batch_size" else 0 if isinstance(d, str) else d for d in self.inputs[n].shape]
            out[n] = np.zeros(shape, np.float32)
        return out

    def generate(self, prompt: np.ndarray, new: int) -> np.ndarray:
        tokens = [int(t) for t in prompt[0]]
        p = prompt.shape[1]
        t0 = time.perf_counter()
        ids = prompt.astype(np.int64)
        past = self._empty_past()
        io = self.sess.io_binding() if self.binding else None
        pos = 0
        first_ms = 0.0
        for k in range(new):
            n = ids.shape[1]
            feeds = {"input_ids": ids, "attention_mask": np.ones((1, pos + n), np.int64)}
            if "position_ids" in self.inputs:
                feeds["position_ids"] = np.arange(pos, pos + n, dtype=np.int64)[None]
            if io is None:
                feeds.update(past)
                out = self.sess.run(None, feeds)
                logits = out[0]
                past = dict(zip(self.pasts, out[1:]))
            else:
                io.clear_binding_inputs()
                io.clear_binding_outputs()
                for name, a in feeds.items():
                    io.bind_cpu_input(name, a)
                for name, v in past.items():
                    if isinstance(v, np.ndarray):
                        io.bind_cpu_input(name, v)
                    else:
                        io.bind_ortvalue_input(name, v)
                io.bind_output("logits", "cpu")
                for name in self.presents:
                    io.bind_output(name, "cpu")
                self.sess.run_with_iobinding(io)
                outs = io.get_outputs()
                logits = outs[0].numpy()
                past = dict(zip(self.pasts, outs[1:]))  # OrtValues, fed back as they are
            nxt = int(logits[0, -1].argmax())
            tokens.append(nxt)
            pos += n
            ids = np.array([[nxt]], np.int64)
            if k == 0:
                first_ms = (time.perf_counter() - t0) * 1e3
                t1 = time.perf_counter()
        decode_s = time.perf_counter() - t1
        self.stats = (first_ms, (new - 1) / decode_s if decode_s > 0 else 0.0)
        return np.array([tokens[:p + new]], np.int64)


def _bench(kind: str, args: argparse.Namespace) -> dict | None:
    from compiler import compile_model
    from runtime import Generator
    from tests.llm.decoders import MEDIUM, VOCAB

    path = _model(kind, args.dir)
    p, new = args.prompt, args.new
    dims = f"sequence_length:1~{p};past_sequence_length:0~{p + new - 1};batch_size:1~1"
    t0 = time.perf_counter()
    exe = compile_model(str(path), dim_range=dims)
    compile_s = time.perf_counter() - t0
    gen = Generator(exe)
    vocab = MEDIUM["vocab"] if kind == "llama-medium" else VOCAB
    prompt = np.random.default_rng(0).integers(2, vocab, (1, p)).astype(np.int64)
    loops = {"run": OrtLoop(path, False), "iobinding": OrtLoop(path, True)}

    ours = gen.generate(prompt, new)  # warm up (and the tokens to check)
    theirs = {name: loop.generate(prompt, new) for name, loop in loops.items()}
    a_first, a_tps = [], []
    o_first: dict[str, list[float]] = {n: [] for n in loops}
    o_tps: dict[str, list[float]] = {n: [] for n in loops}
    for _ in range(args.repeat):
        gen.generate(prompt, new)
        a_first.append(gen.stats.first_token_ms)
        a_tps.append(gen.stats.decode_tokens_per_s)
        for name, loop in loops.items():
            loop.generate(prompt, new)
            o_first[name].append(loop.stats[0])
            o_tps[name].append(loop.stats[1])
    med = statistics.median
    best_first = min(loops, key=lambda n: med(o_first[n]))  # the fastest loop for each figure
    best_tps = max(loops, key=lambda n: med(o_tps[n]))
    mismatch = []
    for name, toks in theirs.items():
        if toks.shape != ours.shape or (toks != ours).any():
            diff = np.flatnonzero(toks[0] != ours[0]) if toks.shape == ours.shape else [0]
            mismatch.append(f"{name}: first differs at new token {int(diff[0]) - p} "
                            f"(ort {int(toks[0, diff[0]])}, atcpy {int(ours[0, diff[0]])})")
    short = {"run": "run", "iobinding": "iob"}
    row = {"kind": kind, "compile_s": compile_s, "ort_loop": f"{short[best_first]}/{short[best_tps]}",
           "ort_first": med(o_first[best_first]), "atc_first": med(a_first),
           "ort_tps": med(o_tps[best_tps]), "atc_tps": med(a_tps), "steps": len(gen.session._steps),
           "loops": {n: (med(o_first[n]), med(o_tps[n])) for n in loops}, "mismatch": mismatch}
    if args.profile:
        sess = gen.session
        feeds = {"input_ids": prompt[:, :1]}
        # a decode-shaped run: a past of p positions
        for k in gen.spec.kv:
            shape = [1 if d == "batch_size" else p if isinstance(d, str) else d for d in k.shape]
            feeds[k.past] = np.zeros(shape, k.dtype)
        if gen.spec.attention_mask:
            feeds[gen.spec.attention_mask] = np.ones((1, p + 1), np.int64)
        if gen.spec.position_ids:
            feeds[gen.spec.position_ids] = np.array([[p]], np.int64)
        sess.profile = None
        for _ in range(10):
            sess.run(None, feeds, profile=True)
        row["profile"] = sess.profile.table(top=12)
    return row


def _variant_options(name: str) -> dict:
    base, _, kv = name.partition("+")
    opts: dict = {"precision_mode": "force_fp16"} if base == "fp16" else {"quant_type": base} if base != "fp32" else {}
    if kv == "kv8":
        opts["kv_cache_dtype"] = "int8"
    return opts


def _print_variants(kinds: list[str], args: argparse.Namespace) -> None:
    """Decode tok/s of each variant beside atcpy fp32's (interleaved, median of --repeat),
    its weight bytes and how many of its greedy tokens equal fp32's."""
    from compiler import compile_model
    from runtime import Generator
    from tests.llm.decoders import MEDIUM, VOCAB

    names = ["fp32"] + [v for v in args.variants.split(",") if v and v != "fp32"]
    print(f"\n{'model':<13} {'variant':<11} {'tok/s':>8} {'/fp32':>6} {'weights MiB':>11} {'tokens = fp32':>13}")
    for kind in kinds:
        p, new = args.prompt, args.new
        dims = f"sequence_length:1~{p};past_sequence_length:0~{p + new - 1};batch_size:1~1"
        vocab = MEDIUM["vocab"] if kind == "llama-medium" else VOCAB
        prompt = np.random.default_rng(0).integers(2, vocab, (1, p)).astype(np.int64)
        exes = {n: compile_model(str(args.dir / f"{kind}.onnx"), dim_range=dims, **_variant_options(n)) for n in names}
        gens = {n: Generator(e) for n, e in exes.items()}
        toks = {n: g.generate(prompt, new) for n, g in gens.items()}
        tps: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.repeat):
            for n, g in gens.items():
                g.generate(prompt, new)
                tps[n].append(g.stats.decode_tokens_per_s)
        base = statistics.median(tps["fp32"])
        for n in names:
            t = statistics.median(tps[n])
            same = float((toks[n][0, p:] == toks["fp32"][0, p:]).mean())
            mib = exes[n].header["report"]["memory"]["weights_bytes"] / 2**20
            print(f"{kind:<13} {n:<11} {t:>8.1f} {t / base:>6.2f} {mib:>11.2f} {same:>12.0%}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ALL), help=f"comma-separated, of {', '.join(ALL)}")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens (default 64)")
    ap.add_argument("--new", type=int, default=64, help="new tokens (default 64)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "atcpy-bench-llm",
                    help="where the exported decoders live (exported on first use)")
    ap.add_argument("--profile", action="store_true", help="print atcpy's slowest steps of one decode run")
    ap.add_argument("--variants", default="",
                    help="also time these compiles against atcpy fp32 in the same run, e.g. "
                         "W8A16,W4A16,W4A16+kv8,fp16 (quant_type, +kv8 = --kv_cache_dtype=int8)")
    args = ap.parse_args(argv)
    kinds = [k for k in args.models.split(",") if k]
    bad = [k for k in kinds if k not in ALL]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {', '.join(ALL)}")
    args.dir.mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort

    print(f"threads: 1 (onnxruntime {ort.__version__} intra-op=1; OMP/OPENBLAS/MKL_NUM_THREADS=1); "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(auto)')}; "
          f"prompt {args.prompt} + {args.new} new tokens, greedy, median of {args.repeat}")
    header = (f"{'model':<13} {'ort loop':<9} {'ort 1st ms':>10} {'atc 1st ms':>10} {'atc/ort':>7} "
              f"{'ort tok/s':>9} {'atc tok/s':>9} {'atc/ort':>7} {'steps/tok':>9} {'compile s':>9}  tokens")
    print(header)
    print("-" * len(header))
    rows = []
    for kind in kinds:
        r = _bench(kind, args)
        rows.append(r)
        print(f"{kind:<13} {r['ort_loop']:<9} {r['ort_first']:>10.2f} {r['atc_first']:>10.2f} "
              f"{r['atc_first'] / r['ort_first']:>7.2f} {r['ort_tps']:>9.1f} {r['atc_tps']:>9.1f} "
              f"{r['atc_tps'] / r['ort_tps']:>7.2f} {r['steps']:>9d} {r['compile_s']:>9.2f}  "
              f"{'equal' if not r['mismatch'] else 'MISMATCH'}", flush=True)
    print("-" * len(header))
    print("onnxruntime loops (first-token ms, decode tok/s): " + "; ".join(
        f"{r['kind']}: " + ", ".join(f"{n} {f:.2f} ms {t:.1f}/s" for n, (f, t) in r["loops"].items())
        for r in rows))
    print("atc/ort: first token is a time (lower is better), decode a rate (higher is better)")
    bad_rows = [r for r in rows if r["mismatch"]]
    for r in bad_rows:
        print(f"TOKEN MISMATCH {r['kind']}: " + "; ".join(r["mismatch"]))
    if args.variants:
        _print_variants(kinds, args)
    for r in rows:
        if "profile" in r:
            print(f"\n{r['kind']}: one decode run at past {args.prompt}, atcpy's slowest steps\n{r['profile']}")
    return 1 if bad_rows else 0


if __name__ == "__main__":
    sys.exit(main())
