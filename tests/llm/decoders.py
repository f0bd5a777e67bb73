"""Three tiny decoder LLMs exported the way CANN's LLM guide does it: optimum's
``text-generation-with-past`` task, built from configs with random init (nothing is
downloaded from the Hugging Face hub).

Each exported ``<kind>.onnx`` is one plain decoder graph (no merged ``If`` branches)
taking the KV cache as inputs::

    input_ids                     int64 [batch_size, sequence_length]
    past_key_values.{i}.key|value f32   [batch_size, kv_heads, past_sequence_length, head_dim]
    attention_mask                int64 [batch_size, past_sequence_length + sequence_length]
    position_ids                  int64 [batch_size, sequence_length]
    -> logits                     f32   [batch_size, sequence_length, vocab]
       present.{i}.key|value      f32   [batch_size, kv_heads, past_sequence_length + sequence_length, head_dim]

(the first prompt runs with ``past_sequence_length`` 0).  Next to it,
``<kind>.torch/`` holds the torch model (``save_pretrained``: config + safetensors) so
a test can compare against transformers' ``generate``; see `load_torch_decoder`.

torch, transformers and optimum (``optimum-onnx``) are test-only tools from the
``test`` extras; they are imported inside the functions that need them, so
`decoder_feeds` works with onnx and numpy alone.

Run as a script to write all three into a directory::

    python -m tests.llm.decoders /tmp/decoders
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

KINDS = ("gpt2", "llama", "qwen2")
# larger kinds, exported the same way but only when asked for by name (bench/llm.py)
MEDIUM_KINDS = ("llama-medium",)
SEED = 0
TASK = "text-generation-with-past"

# tiny shapes: 2 layers, hidden 64, 4 query heads (head_dim 16); LLaMA and Qwen2 use
# GQA with 2 KV heads and RoPE
LAYERS = 2
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 128
VOCAB = 256
MAX_POSITIONS = 128

# llama-medium: 4 layers, hidden 512, 8 query / 4 KV heads (head_dim 64), vocab 8192;
# room for a 64-token prompt and 64 new tokens
MEDIUM = {"layers": 4, "hidden": 512, "heads": 8, "kv_heads": 4, "intermediate": 1408, "vocab": 8192,
          "max_positions": 256}


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# before anything imports huggingface_hub (it reads these once, at import time)
_offline()


def decoder_config(kind: str) -> Any:
    """The transformers config of the tiny ``kind`` decoder."""
    _offline()
    if kind == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(n_layer=LAYERS, n_embd=HIDDEN, n_head=HEADS, n_inner=INTERMEDIATE, vocab_size=VOCAB,
                          n_positions=MAX_POSITIONS, bos_token_id=0, eos_token_id=1)
    if kind == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(num_hidden_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS,
                           num_key_value_heads=KV_HEADS, intermediate_size=INTERMEDIATE, vocab_size=VOCAB,
                           max_position_embeddings=MAX_POSITIONS, bos_token_id=0, eos_token_id=1,
                           pad_token_id=None, tie_word_embeddings=False)
    if kind == "llama-medium":
        from transformers import LlamaConfig

        m = MEDIUM
        return LlamaConfig(num_hidden_layers=m["layers"], hidden_size=m["hidden"], num_attention_heads=m["heads"],
                           num_key_value_heads=m["kv_heads"], intermediate_size=m["intermediate"],
                           vocab_size=m["vocab"], max_position_embeddings=m["max_positions"], bos_token_id=0,
                           eos_token_id=1, pad_token_id=None, tie_word_embeddings=False)
    if kind == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(num_hidden_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS,
                           num_key_value_heads=KV_HEADS, intermediate_size=INTERMEDIATE, vocab_size=VOCAB,
                           max_position_embeddings=MAX_POSITIONS, bos_token_id=0, eos_token_id=1,
                           tie_word_embeddings=False, use_sliding_window=False)
    raise ValueError(f"unknown decoder kind {kind!r}; expected one of {KINDS + MEDIUM_KINDS}")


def build_torch_decoder(kind: str, seed: int = SEED) -> Any:
    """The ``kind`` causal LM in eval mode, random init under ``torch.manual_seed(seed)``."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = decoder_config(kind)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(cfg)
    return model.eval()


def torch_dir(onnx_path: str | Path) -> Path:
    """Where `export_decoder` saved the torch model of ``onnx_path``."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".torch")


def load_torch_decoder(onnx_path: str | Path) -> Any:
    """The torch model `export_decoder` exported to ``onnx_path`` (eval mode)."""
    _offline()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(torch_dir(onnx_path)).eval()


def export_decoder(kind: str, out_dir: str | Path, seed: int = SEED, model: Any = None) -> Path:
    """Export the tiny ``kind`` decoder with optimum to ``out_dir/<kind>.onnx`` and save
    its torch model to ``out_dir/<kind>.torch/``; return the ONNX path.

    ``model`` (optional) is an already-built `build_torch_decoder` model to export
    instead of building one.  The export uses optimum's default opset and graph
    (TorchScript exporter, ``do_constant_folding``), skips optimum's own validation (the
    tests check against torch themselves) and keeps the single ``model.onnx`` with past
    inputs that ``text-generation-with-past`` produces in optimum 2.x / optimum-onnx.
    """
    _offline()
    from optimum.exporters.onnx import onnx_export_from_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = build_torch_decoder(kind, seed)
    onnx_path = out_dir / f"{kind}.onnx"
    tdir = torch_dir(onnx_path)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{kind}-export-") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings from the TorchScript exporter
            onnx_export_from_model(model, output=tmp, task=TASK, do_validation=False)
        files = sorted(p.name for p in Path(tmp).iterdir())
        if "model.onnx" not in files or any(f.startswith("decoder") for f in files):
            raise RuntimeError(f"unexpected optimum export layout for {kind}: {files}")
        # tiny models keep their weights inside the proto; re-save in one file anyway
        proto = onnx.load(Path(tmp) / "model.onnx")
        onnx.save(proto, onnx_path)
    if tdir.exists():
        shutil.rmtree(tdir)
    model.save_pretrained(tdir)
    return onnx_path


# -- feeds ------------------------------------------------------------------------------

_ONNX_TO_NP = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.BOOL: np.bool_,
}


def _proto(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(model, load_external_data=False)


def _dims(v: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in v.type.tensor_type.shape.dim]


def vocab_size(model: str | Path | onnx.ModelProto) -> int:
    """The vocabulary size: the last (static) dim of the ``logits`` output."""
    proto = _proto(model)
    for o in proto.graph.output:
        if o.name == "logits":
            v = _dims(o)[-1]
            if isinstance(v, int) and v > 0:
                return v
    raise ValueError("model has no logits output with a static vocab dim")


def dim_values(batch: int, seq: int, past: int) -> dict[str, int]:
    """The value of each dim_param optimum writes, at a (batch, sequence, past) point."""
    return {"batch_size": batch, "sequence_length": seq, "past_sequence_length": past,
            "past_sequence_length + sequence_length": past + seq}


def resolve_shape(v: onnx.ValueInfoProto, batch: int, seq: int, past: int) -> tuple[int, ...]:
    """``v``'s shape with its dim_params replaced by their values at the point."""
    env = dim_values(batch, seq, past)
    out = []
    for d in _dims(v):
        if isinstance(d, str):
            if d not in env:
                raise ValueError(f"{v.name}: unknown dim_param {d!r}")
            out.append(env[d])
        else:
            out.append(d)
    return tuple(out)


def decoder_feeds(model: str | Path | onnx.ModelProto, batch: int, seq: int, past: int,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Valid feeds for an exported decoder at a (sequence, past) point: ``input_ids``
    random in the vocabulary, ``attention_mask`` all ones of length ``past + seq``,
    ``position_ids`` ``past .. past + seq - 1`` for every row, and every
    ``past_key_values.*`` standard normal of shape ``[batch, kv_heads, past, head_dim]``."""
    proto = _proto(model)
    rng = np.random.default_rng(seed)
    init = {i.name for i in proto.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for v in proto.graph.input:
        if v.name in init:
            continue
        dt = _ONNX_TO_NP[v.type.tensor_type.elem_type]
        shape = resolve_shape(v, batch, seq, past)
        if v.name == "input_ids":
            feeds[v.name] = rng.integers(0, vocab_size(proto), size=shape).astype(dt)
        elif v.name == "attention_mask":
            feeds[v.name] = np.ones(shape, dt)
        elif v.name == "position_ids":
            feeds[v.name] = np.broadcast_to(np.arange(past, past + seq, dtype=dt), shape).copy()
        elif v.name.startswith("past_key_values."):
            feeds[v.name] = rng.standard_normal(shape).astype(dt)
        else:
            raise ValueError(f"don't know how to feed decoder input {v.name!r}")
    return feeds


def expected_output_shapes(model: str | Path | onnx.ModelProto, batch: int, seq: int,
                           past: int) -> dict[str, tuple[int, ...]]:
    """Each graph output's shape at the (batch, sequence, past) point."""
    proto = _proto(model)
    return {o.name: resolve_shape(o, batch, seq, past) for o in proto.graph.output}


def greedy_decode(run: Any, model: str | Path | onnx.ModelProto, input_ids: np.ndarray,
                  max_new_tokens: int) -> np.ndarray:
    """Greedy generation with an exported decoder and its KV cache: one prefill call
    with past 0, then one call per new token with sequence 1.  ``run(feeds) -> dict``
    runs the graph (onnxruntime, the atcpy runtime, ...).  Returns ``input_ids``
    followed by the new tokens (``[batch, prompt + max_new_tokens]``), comparable to
    transformers' ``generate(do_sample=False, min_new_tokens=max_new_tokens, ...)``."""
    proto = _proto(model)
    batch, seq = input_ids.shape
    feeds = decoder_feeds(proto, batch, seq, 0)
    feeds["input_ids"] = input_ids.astype(feeds["input_ids"].dtype)
    tokens = input_ids.astype(np.int64)
    past = 0
    for _ in range(max_new_tokens):
        out = run(feeds)
        nxt = out["logits"][:, -1].argmax(-1).astype(np.int64)[:, None]
        tokens = np.concatenate([tokens, nxt], axis=1)
        past += feeds["input_ids"].shape[1]
        step = decoder_feeds(proto, batch, 1, past)
        step["input_ids"] = nxt.astype(step["input_ids"].dtype)
        for name in step:
            if name.startswith("past_key_values."):
                step[name] = out[name.replace("past_key_values.", "present.")]
        feeds = step
    return tokens


# -- script -----------------------------------------------------------------------------

def describe(path: str | Path) -> str:
    """A short report of an exported decoder: size, opset, inputs/outputs, op counts."""
    from collections import Counter

    proto = _proto(path)
    lines = [f"{path}: {Path(path).stat().st_size} bytes, opset "
             + ", ".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in proto.opset_import)
             + f", {len(proto.graph.node)} nodes, {len(proto.graph.initializer)} initializers"]
    elem = {k: np.dtype(t).name for k, t in _ONNX_TO_NP.items()}
    for kind, vs in (("in ", proto.graph.input), ("out", proto.graph.output)):
        for v in vs:
            lines.append(f"  {kind} {v.name} {elem.get(v.type.tensor_type.elem_type, '?')} {_dims(v)}")
    ops = Counter(n.op_type for n in proto.graph.node)
    lines.append("  ops " + ", ".join(f"{k}:{n}" for k, n in ops.most_common()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m tests.llm.decoders OUT_DIR [KIND ...]  (kinds: {', '.join(KINDS + MEDIUM_KINDS)}; "
              f"default: {', '.join(KINDS)})", file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    kinds = argv[1:] or list(KINDS)
    for kind in kinds:
        t0 = time.perf_counter()
        path = export_decoder(kind, out_dir)
        print(f"{kind}: exported in {time.perf_counter() - t0:.2f} s")
        print(describe(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def generate_traced(gen: Any, prompt: np.ndarray, new: int, check: Any) -> tuple[np.ndarray, list[int], list[Any]]:
    """``gen.generate(prompt, new)`` with each `Session.run` it makes traced: returns the
    tokens, each run's peak of newly allocated bytes (tracemalloc) and ``check(names,
    feeds)`` of each run (e.g. whether its pasts are the KV cache itself)."""
    import tracemalloc

    sess = gen.session
    run, peaks, seen = sess.run, [], []

    def traced(names, feeds, **kw):
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        outs = run(names, feeds, **kw)
        peaks.append(tracemalloc.get_traced_memory()[1] - base)
        seen.append(check(names, feeds))
        return outs

    sess.run = traced
    tracemalloc.start()
    try:
        out = gen.generate(prompt, new)
    finally:
        tracemalloc.stop()
        sess.run = run
    return out, peaks, seen
