"""The 7B plan for an 8 GB 310P: a LLaMA-7B-shaped decoder whose weights are never
written, and what ``atcpy --mode=3`` says about fitting it.

    python bench/llama7b.py [--dir DIR] [--plans fp16,W8A16,...] [--max-len 4096] [--quant-dtype float32]
    python bench/llama7b.py --layers 2 --hidden 256 --heads 4 --intermediate 688 --vocab 1000

`write_decoder` writes the decoder as ONNX with the interface of optimum's
``text-generation-with-past`` exports (``input_ids``, ``attention_mask``,
``position_ids``, ``past_key_values.N.key|value`` in; ``logits``,
``present.N.key|value`` out), as a plain graph: RMSNorm as
Pow/ReduceMean/Add/Sqrt/Div/Mul, rotate-half rotary, attention with a causal +
padding mask and Softmax, the SiLU-gated MLP.  Every weight is external data in
one file that is made sparse (truncated to its size, never written), so the 7B
model (13.5 GB of fp16) is written in well under a second; ``fill="random"``
writes real values instead (small configs, for numeric tests).

The script then runs ``atcpy --mode=3`` on it for each plan (`PLANS`: fp32,
fp16, W8A16, W8A16 and W4A16 with an int8 KV cache), one subprocess each, and
prints each plan's table, its wall time and peak RSS, and the hand computation
of every figure (`hand_figures`) beside what atcpy printed; it exits 1 if one
is more than 1% off.

Hand computation (P = parameters, D = hidden, F = intermediate, V = vocab,
n = layers, L = the KV bound, g = weight group size):

    matmul weights  n·(4·D² + 3·D·F) + D·V        (q, k, v, o; gate, up, down; lm_head)
    embedding       V·D                            (quantized too: quantize-weights' tables)
    RMSNorm         (2n + 1)·D                     (never quantized)
    fp16 / fp32     2 / 4 bytes per parameter
    W8A16           1 byte per matmul and embedding weight + a 4-byte scale per g of them
    W4A16           0.5 byte per matmul and embedding weight + a 4-byte scale per g of them
                    (exactly: ceil(K/g) groups of g rows per [K, N] matrix, the last padded;
                    g divides 4096 and 11008, so for 7B it is the per-weight rate above)
    KV cache        2 (K, V) · n · L · D · bytes (fp16 2, fp32 4; int8 1 + one 4-byte
                    scale per token and head: 2 · n · L · heads · 4)

quantize-weights quantizes float32 weights, so the W8A16/W4A16 plans run on the
float32 model (``--quant-dtype`` picks the other).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/llama7b.py` from anywhere

__all__ = ["SEVEN_B", "Decoder", "hand_figures", "main", "write_decoder"]

GiB = float(1 << 30)
ALIGN = 4096  # external data offsets: page-aligned, so each weight maps on its own pages


@dataclass(frozen=True)
class Decoder:
    """A LLaMA-shaped decoder: multi-head attention (as many KV heads as heads), RoPE."""

    layers: int = 32
    hidden: int = 4096
    heads: int = 32
    intermediate: int = 11008
    vocab: int = 32000
    dtype: str = "float16"
    batch: int | str = 1  # an int, or a symbol name ("batch_size", as optimum writes it)
    eps: float = 1e-6
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def matmul_params(self) -> int:
        d, f = self.hidden, self.intermediate
        return self.layers * (4 * d * d + 3 * d * f) + d * self.vocab

    @property
    def params(self) -> int:
        return self.matmul_params + self.vocab * self.hidden + (2 * self.layers + 1) * self.hidden


SEVEN_B = Decoder()


def _matrices(cfg: Decoder) -> list[tuple[int, int, int]]:
    """(K, N, how many) of every weight quantize-weights stores in groups along K."""
    d, f, n = cfg.hidden, cfg.intermediate, cfg.layers
    return [(d, d, 4 * n), (d, f, 2 * n), (f, d, n), (d, cfg.vocab, 2)]  # attention, gate/up, down; head, embedding


def hand_figures(cfg: Decoder, quant_type: str | None = None, kv_dtype: str | None = None, max_len: int = 4096,
                 group: int = 128) -> dict[str, int]:
    """Bytes of weights and KV cache of `cfg` by the formulas of the module doc."""
    item = np.dtype(cfg.dtype).itemsize
    norms = (2 * cfg.layers + 1) * cfg.hidden
    if quant_type is None:
        weights = (sum(k * n * c for k, n, c in _matrices(cfg)) + norms) * item
    else:  # ceil(K/g) groups of g rows (the last one padded), each with a float32 scale per column
        bits = {"W8A16": 8, "W4A16": 4}[quant_type]
        weights = norms * item + sum(math.ceil(k / min(group, k + k % 2)) * (min(group, k + k % 2) * bits // 8 + 4)
                                     * n * c for k, n, c in _matrices(cfg))
    kv_item = {None: item, "fp32": 4, "fp16": 2, "int8": 1}[kv_dtype]
    batch = cfg.batch if isinstance(cfg.batch, int) else 1
    kv = 2 * cfg.layers * batch * max_len * cfg.hidden * kv_item
    if kv_dtype == "int8":  # a float32 scale per token and head
        kv += 2 * cfg.layers * batch * max_len * cfg.heads * 4
    return {"weights_bytes": int(weights), "kv_cache_bytes": int(kv)}


# -- the ONNX graph -------------------------------------------------------------------------------------
class _Builder:
    """Nodes, small inline constants and the external weights' layout of one model."""

    def __init__(self, cfg: Decoder, data_name: str) -> None:
        from onnx import helper

        self.cfg, self.data_name, self.helper = cfg, data_name, helper
        self.nodes: list = []
        self.inits: list = []
        self.weights: list[tuple[str, tuple[int, ...], int]] = []  # name, shape, offset
        self.size = 0
        self._n = 0
        self.fdt = helper.np_dtype_to_tensor_dtype(np.dtype(cfg.dtype))

    def op(self, kind: str, inputs: list[str], n_out: int = 1, name: str | None = None, **attrs) -> list[str]:
        self._n += 1
        base = name or f"/{kind}_{self._n}"
        outs = [f"{base}_out{i}" for i in range(n_out)]
        self.nodes.append(self.helper.make_node(kind, inputs, outs, name=base, **attrs))
        return outs

    def one(self, kind: str, *inputs: str, name: str | None = None, **attrs) -> str:
        return self.op(kind, list(inputs), 1, name, **attrs)[0]

    def const(self, name: str, value) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...]) -> str:
        """An initializer kept in the external file at the next aligned offset."""
        from onnx import TensorProto

        t = TensorProto(name=name, data_type=self.fdt, dims=list(shape), data_location=TensorProto.EXTERNAL)
        nbytes = math.prod(shape) * np.dtype(self.cfg.dtype).itemsize
        for k, v in (("location", self.data_name), ("offset", self.size), ("length", nbytes)):
            entry = t.external_data.add()
            entry.key, entry.value = k, str(v)
        self.inits.append(t)
        self.weights.append((name, shape, self.size))
        self.size += -(-nbytes // ALIGN) * ALIGN
        return name


def _rms_norm(b: _Builder, x: str, w: str, where: str) -> str:
    sq = b.one("Pow", x, "two", name=f"{where}/Pow")
    mean = b.one("ReduceMean", sq, "axis_last", name=f"{where}/ReduceMean", keepdims=1)
    root = b.one("Sqrt", b.one("Add", mean, "eps", name=f"{where}/Add"), name=f"{where}/Sqrt")
    inv = b.one("Div", "one", root, name=f"{where}/Div")
    return b.one("Mul", w, b.one("Mul", x, inv, name=f"{where}/Mul"), name=f"{where}/Mul_1")


def _rotary(b: _Builder, x: str, cos: str, sin: str, where: str) -> str:
    """x·cos + rotate_half(x)·sin, rotate_half(x) = [-x2, x1]."""
    x1 = b.one("Slice", x, "zero1", "half", "axis_last", name=f"{where}/Slice")
    x2 = b.one("Slice", x, "half", "big", "axis_last", name=f"{where}/Slice_1")
    rot = b.one("Concat", b.one("Neg", x2, name=f"{where}/Neg"), x1, name=f"{where}/Concat", axis=-1)
    return b.one("Add", b.one("Mul", x, cos, name=f"{where}/Mul"), b.one("Mul", rot, sin, name=f"{where}/Mul_1"),
                 name=f"{where}/Add")


def _heads(b: _Builder, x: str, where: str) -> str:
    """[B, S, D] -> [B, H, S, Dh]."""
    return b.one("Transpose", b.one("Reshape", x, "heads_shape", name=f"{where}/Reshape"), name=f"{where}/Transpose",
                 perm=[0, 2, 1, 3])


def _layer(b: _Builder, i: int, x: str, cos: str, sin: str, mask: str) -> str:
    cfg, p, L = b.cfg, f"model.layers.{i}", f"/model/layers.{i}"
    d, f = cfg.hidden, cfg.intermediate
    h = _rms_norm(b, x, b.weight(f"{p}.input_layernorm.weight", (d,)), f"{L}/input_layernorm")
    q, k, v = (b.one("MatMul", h, b.weight(f"{p}.self_attn.{n}_proj.weight", (d, d)), name=f"{L}/self_attn/{n}_proj/MatMul")
               for n in "qkv")
    q = _rotary(b, _heads(b, q, f"{L}/self_attn/q"), cos, sin, f"{L}/self_attn/q_rot")
    k = _rotary(b, _heads(b, k, f"{L}/self_attn/k"), cos, sin, f"{L}/self_attn/k_rot")
    v = _heads(b, v, f"{L}/self_attn/v")
    b.nodes.append(b.helper.make_node("Concat", [f"past_key_values.{i}.key", k], [f"present.{i}.key"],
                                      name=f"{L}/self_attn/Concat_k", axis=2))
    b.nodes.append(b.helper.make_node("Concat", [f"past_key_values.{i}.value", v], [f"present.{i}.value"],
                                      name=f"{L}/self_attn/Concat_v", axis=2))
    kt = b.one("Transpose", f"present.{i}.key", name=f"{L}/self_attn/Transpose_k", perm=[0, 1, 3, 2])
    scores = b.one("Mul", b.one("MatMul", q, kt, name=f"{L}/self_attn/MatMul"), "scale", name=f"{L}/self_attn/Mul")
    probs = b.one("Softmax", b.one("Add", scores, mask, name=f"{L}/self_attn/Add"), name=f"{L}/self_attn/Softmax",
                  axis=-1)
    ctx = b.one("MatMul", probs, f"present.{i}.value", name=f"{L}/self_attn/MatMul_1")
    ctx = b.one("Reshape", b.one("Transpose", ctx, name=f"{L}/self_attn/Transpose_o", perm=[0, 2, 1, 3]),
                "hidden_shape", name=f"{L}/self_attn/Reshape_o")
    o = b.one("MatMul", ctx, b.weight(f"{p}.self_attn.o_proj.weight", (d, d)), name=f"{L}/self_attn/o_proj/MatMul")
    x = b.one("Add", x, o, name=f"{L}/Add")
    h = _rms_norm(b, x, b.weight(f"{p}.post_attention_layernorm.weight", (d,)), f"{L}/post_attention_layernorm")
    gate = b.one("MatMul", h, b.weight(f"{p}.mlp.gate_proj.weight", (d, f)), name=f"{L}/mlp/gate_proj/MatMul")
    up = b.one("MatMul", h, b.weight(f"{p}.mlp.up_proj.weight", (d, f)), name=f"{L}/mlp/up_proj/MatMul")
    act = b.one("Mul", b.one("Mul", gate, b.one("Sigmoid", gate, name=f"{L}/mlp/act/Sigmoid"), name=f"{L}/mlp/act/Mul"),
                up, name=f"{L}/mlp/Mul")
    down = b.one("MatMul", act, b.weight(f"{p}.mlp.down_proj.weight", (f, d)), name=f"{L}/mlp/down_proj/MatMul")
    return b.one("Add", x, down, name=f"{L}/Add_1")


def _mask(b: _Builder) -> str:
    """[B, 1, S, P+S]: 0 where key j may be seen from query i (j <= P + i and attention_mask[j]),
    the dtype's lowest value elsewhere."""
    s = b.one("Gather", b.one("Shape", "input_ids", name="/mask/Shape"), "one_i", name="/mask/Gather", axis=0)
    total = b.one("Gather", b.one("Shape", "attention_mask", name="/mask/Shape_1"), "one_i", name="/mask/Gather_1",
                  axis=0)
    past = b.one("Sub", total, s, name="/mask/Sub")
    keys = b.one("Range", "zero_i", total, "one_i", name="/mask/Range")
    queries = b.one("Unsqueeze", b.one("Range", past, total, "one_i", name="/mask/Range_1"), "axis_last",
                    name="/mask/Unsqueeze")
    causal = b.one("LessOrEqual", keys, queries, name="/mask/LessOrEqual")
    pad = b.one("Unsqueeze", b.one("Cast", "attention_mask", name="/mask/Cast", to=9), "axes12", name="/mask/Unsqueeze_1")
    return b.one("Where", b.one("And", causal, pad, name="/mask/And"), "mask_zero", "mask_min", name="/mask/Where")


def _rope(b: _Builder) -> tuple[str, str]:
    """cos, sin of position_ids · inv_freq, [B, 1, S, Dh] in the model's dtype."""
    cfg = b.cfg
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim)
    b.const("inv_freq", inv.astype(np.float32))
    pos = b.one("Unsqueeze", b.one("Cast", "position_ids", name="/rope/Cast", to=1), "axis_last", name="/rope/Unsqueeze")
    freqs = b.one("Mul", pos, "inv_freq", name="/rope/Mul")
    emb = b.one("Unsqueeze", b.one("Concat", freqs, freqs, name="/rope/Concat", axis=-1), "one_axis",
                name="/rope/Unsqueeze_1")
    out = []
    for fn in ("Cos", "Sin"):
        t = b.one(fn, emb, name=f"/rope/{fn}")
        out.append(b.one("Cast", t, name=f"/rope/Cast_{fn}", to=b.fdt) if b.fdt != 1 else t)
    return out[0], out[1]


def _small_constants(b: _Builder) -> None:
    cfg = b.cfg
    dt = np.dtype(cfg.dtype)
    for name, v in {"two": dt.type(2), "one": dt.type(1), "eps": dt.type(cfg.eps),
                    "scale": dt.type(1 / math.sqrt(cfg.head_dim)), "mask_zero": dt.type(0),
                    "mask_min": np.finfo(dt).min}.items():
        b.const(name, np.array(v, dt))
    for name, v in {"axis_last": [-1], "one_axis": [1], "axes12": [1, 2], "zero1": [0],
                    "half": [cfg.head_dim // 2], "big": [1 << 62],
                    "heads_shape": [0, 0, cfg.heads, cfg.head_dim], "hidden_shape": [0, 0, cfg.hidden]}.items():
        b.const(name, np.array(v, np.int64))
    b.const("zero_i", np.array(0, np.int64))
    b.const("one_i", np.array(1, np.int64))


def build_model(cfg: Decoder, data_name: str):
    """(the ModelProto with external weights, the builder holding their layout)."""
    from onnx import TensorProto, helper

    if cfg.hidden % cfg.heads or cfg.head_dim % 2:
        raise ValueError(f"hidden {cfg.hidden} must split into {cfg.heads} heads of an even size")
    b = _Builder(cfg, data_name)
    _small_constants(b)
    bt, s, p, ps = cfg.batch, "sequence_length", "past_sequence_length", "past_sequence_length + sequence_length"
    kv = [bt, cfg.heads, p, cfg.head_dim]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [bt, s]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [bt, ps]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, [bt, s])]
    outputs = [helper.make_tensor_value_info("logits", b.fdt, [bt, s, cfg.vocab])]
    for i in range(cfg.layers):
        for n in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{n}", b.fdt, kv))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{n}", b.fdt, [bt, cfg.heads, ps, cfg.head_dim]))
    embed = b.weight("model.embed_tokens.weight", (cfg.vocab, cfg.hidden))
    x = b.one("Gather", embed, "input_ids", name="/model/embed_tokens/Gather", axis=0)
    cos, sin = _rope(b)
    mask = _mask(b)
    for i in range(cfg.layers):
        x = _layer(b, i, x, cos, sin, mask)
    h = _rms_norm(b, x, b.weight("model.norm.weight", (cfg.hidden,)), "/model/norm")
    b.nodes.append(helper.make_node("MatMul", [h, b.weight("lm_head.weight", (cfg.hidden, cfg.vocab))], ["logits"],
                                    name="/lm_head/MatMul"))
    graph = helper.make_graph(b.nodes, "llama", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="atcpy-bench")
    model.ir_version = 8
    return model, b


def write_decoder(path: str | os.PathLike, cfg: Decoder = SEVEN_B, fill: str | None = None, seed: int = 0) -> Path:
    """Write `cfg` as ONNX at `path` with its weights in ``<path>.data``: a sparse file of
    the right size that is never written (`fill` None), or random values (``"random"``:
    normal(0, 0.02) matrices, RMSNorm weights 1)."""
    import onnx

    path = Path(path)
    data = path.with_name(path.name + ".data")
    model, b = build_model(cfg, data.name)
    with open(data, "wb") as fh:
        fh.truncate(b.size)  # a hole of b.size bytes: no block is written
    if fill == "random":
        rng = np.random.default_rng(seed)
        mm = np.memmap(data, np.uint8, "r+", shape=(b.size,))
        for name, shape, off in b.weights:
            n = math.prod(shape)
            w = np.ones(n) if name.endswith("norm.weight") else rng.normal(0.0, 0.02, n)
            mm[off:off + n * np.dtype(cfg.dtype).itemsize] = w.astype(cfg.dtype).view(np.uint8)
        mm.flush()
        del mm
    elif fill is not None:
        raise ValueError(f"fill must be None or 'random', got {fill!r}")
    onnx.save_model(model, path)
    return path


# -- running the plans -------------------------------------------------------------------------------------
# label -> (the model's dtype, atcpy's flags); None: --quant-dtype
PLANS: dict[str, tuple[str | None, list[str]]] = {
    "fp32": ("float32", []),
    "fp16": ("float16", []),
    "W8A16": (None, ["--quant_type=W8A16"]),
    "W8A16 + int8 KV": (None, ["--quant_type=W8A16", "--kv_cache_dtype=int8"]),
    "W4A16 + int8 KV": (None, ["--quant_type=W4A16", "--kv_cache_dtype=int8"]),
}


# the child runs atcpy's main and, on exit, reports its own peak RSS: VmHWM of its address
# space (ru_maxrss is no good here: Linux carries the forking parent's peak across exec)
_CHILD = ("import atexit, sys\n"
          "def hwm():\n"
          "    for line in open('/proc/self/status'):\n"
          "        if line.startswith('VmHWM:'):\n"
          "            print(f'{_HWM}{int(line.split()[1]) * 1024}', file=sys.stderr)\n"
          "atexit.register(hwm)\n"
          "from compiler.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")
_HWM = "llama7b-peak-rss-bytes="


def run_plan(model: Path, flags: list[str], max_len: int, soc: str = "Ascend310P3",
             mode: int = 3, extra: list[str] | None = None) -> dict:
    """``atcpy --mode=<mode>`` in a subprocess: its exit code, output, wall time and peak
    RSS (VmHWM, as the child reports it; None where /proc is missing)."""
    args = [f"--mode={mode}", f"--model={model}", f"--soc_version={soc}",
            f"--dim_range=sequence_length:1~1;past_sequence_length:0~{max_len - 1}", *flags, *(extra or [])]
    cmd = [sys.executable, "-c", f"_HWM = {_HWM!r}\n{_CHILD}", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False)
    seconds = time.perf_counter() - t0
    rss = re.search(rf"^{_HWM}(\d+)$", proc.stderr, re.MULTILINE)
    err = re.sub(rf"^{_HWM}\d+\n?", "", proc.stderr, flags=re.MULTILINE)
    return {"cmd": ["atcpy", *args], "rc": proc.returncode, "out": proc.stdout, "err": err, "seconds": seconds,
            "rss_bytes": int(rss.group(1)) if rss else None}


def printed_bytes(out: str, row: str) -> int | None:
    """The exact byte count atcpy printed in a table row (``weights ... (123 bytes)``)."""
    m = re.search(rf"^\s*{re.escape(row)}\b.*?\((\d+) bytes\)", out, re.MULTILINE)
    return int(m.group(1)) if m else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="where to write the models (default: a temporary directory)")
    ap.add_argument("--quant-dtype", default="float32", choices=["float16", "float32"],
                    help="the model's dtype for the W8A16/W4A16 plans")
    ap.add_argument("--max-len", type=int, default=4096, help="the KV cache's bound (past + new tokens)")
    ap.add_argument("--soc_version", default="Ascend310P3")
    for k, v in (("layers", 32), ("hidden", 4096), ("heads", 32), ("intermediate", 11008), ("vocab", 32000)):
        ap.add_argument(f"--{k}", type=int, default=v)
    ap.add_argument("--plans", default=",".join(PLANS), help=f"comma-separated, of: {', '.join(PLANS)}")
    args = ap.parse_args(argv)
    cfg = replace(SEVEN_B, layers=args.layers, hidden=args.hidden, heads=args.heads,
                  intermediate=args.intermediate, vocab=args.vocab)
    plans = [p.strip() for p in args.plans.split(",") if p.strip()]
    unknown = [p for p in plans if p not in PLANS]
    if unknown:
        ap.error(f"unknown plan(s) {unknown}; choose from {list(PLANS)}")
    with tempfile.TemporaryDirectory(prefix="atcpy-llama7b-") as tmp:
        out_dir = Path(args.dir or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        models = {}
        for dtype in sorted({PLANS[p][0] or args.quant_dtype for p in plans}):
            t0 = time.perf_counter()
            models[dtype] = write_decoder(out_dir / f"llama7b-{dtype}.onnx", replace(cfg, dtype=dtype))
            data = models[dtype].with_name(models[dtype].name + ".data")
            print(f"wrote {models[dtype].name} + {data.name}: {data.stat().st_size / GiB:.2f} GiB apparent, "
                  f"{data.stat().st_blocks * 512 / 2**20:.2f} MiB on disk, in {time.perf_counter() - t0:.2f} s")
        print()
        rows = []
        for plan in plans:
            dtype = PLANS[plan][0] or args.quant_dtype
            rows.append(_run_one(plan, models[dtype], replace(cfg, dtype=dtype), args))
        return _summary(rows)


def _run_one(plan: str, model: Path, cfg: Decoder, args: argparse.Namespace) -> tuple[str, dict, dict]:
    flags = PLANS[plan][1]
    r = run_plan(model, flags, args.max_len, args.soc_version)
    label = f"{plan} ({cfg.dtype} model)" if PLANS[plan][0] is None else plan
    print(f"== {label}: {' '.join(r['cmd'])}\n{r['out'].rstrip()}\n{r['err'].rstrip()}".rstrip() + "\n")
    quant = next((f.split("=")[1] for f in flags if f.startswith("--quant_type=")), None)
    kv = next((f.split("=")[1] for f in flags if f.startswith("--kv_cache_dtype=")), None)
    return label, r, hand_figures(cfg, quant, kv, args.max_len)


def _summary(rows: list[tuple[str, dict, dict]]) -> int:
    print(f"{'plan':<34} {'rc':>3} {'weights GiB':>11} {'hand':>6} {'KV GiB':>7} {'hand':>6} {'arena KiB':>9} "
          f"{'total GiB':>9} {'verdict':<13} {'wall s':>6} {'RSS MiB':>7}")
    worst = 0.0
    for label, r, hand in rows:
        w, kv, arena, total = (printed_bytes(r["out"], k) for k in ("weights", "KV cache", "activations", "total"))
        for got, want in ((w, hand["weights_bytes"]), (kv, hand["kv_cache_bytes"])):
            worst = max(worst, abs(got - want) / want if got is not None else 1.0)
        verdict = "fits" if "verdict          fits" in r["out"] else ("does not fit" if "does not fit" in r["out"] else "?")
        print(f"{label:<34} {r['rc']:>3} {_gib(w):>11} {hand['weights_bytes'] / GiB:>6.2f} {_gib(kv):>7} "
              f"{hand['kv_cache_bytes'] / GiB:>6.2f} {(arena or 0) / 1024:>9.1f} {_gib(total):>9} {verdict:<13} "
              f"{r['seconds']:>6.1f} {(r['rss_bytes'] or 0) / 2**20:>7.0f}")
    print(f"\nlargest difference from the hand computation: {100 * worst:.4f}%")
    return 0 if worst <= 0.01 else 1


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GiB:.2f}"


if __name__ == "__main__":
    sys.exit(main())
