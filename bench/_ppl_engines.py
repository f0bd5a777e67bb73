"""The engines `bench/perplexity.py` compares, behind one chunked decoder loop.

A runner holds one batch's past: ``reset(batch)`` empties it, ``step(ids)`` runs
the next chunk of tokens (``[batch, n]``) with the past fed back and returns the
chunk's logits (``[batch, n, vocab]``, a copy).  `chunked_nll` drives every
runner the same way: a prefill chunk, then fixed-size chunks through the cache.

- `AtcRunner`: an atcpy executable through `runtime.Session`, the past handed
  from run to run by `runtime.Generator`'s own hooks (``_empty_past`` /
  ``_next_past``: a compiled KV cache's present is a view of its buffer);
- `OrtRunner`: an ONNX file in onnxruntime (fp32, or rewritten by one of its
  quantizers, `ort_quantize`);
- `TorchRunner`: the transformers model with its ``DynamicCache`` (the reference).

Weight bytes: `atc_bytes` / `onnx_bytes` give a model's total weight bytes and
the bytes of its weight matrices (every MatMul-like op's constant operands after
the activation: the matrix with its scales and zero points).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AtcRunner", "OrtRunner", "OrtSpec", "TorchRunner", "atc_bytes", "chunked_nll", "kv_dtypes",
           "onnx_bytes", "ort_quantize"]


def _log_softmax_pick(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p(target) per position, in float64."""
    z = logits.astype(np.float64)
    z -= z.max(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1))
    return lse - np.take_along_axis(z, targets[..., None].astype(np.int64), -1)[..., 0]


def chunked_nll(runner: Any, ids: np.ndarray, targets: np.ndarray, prefill: int, chunk: int) -> np.ndarray:
    """Per-position negative log-likelihoods ``[batch, length]`` of ``targets`` (the
    next token after each of ``ids``), run as a ``prefill`` chunk then ``chunk``-sized
    chunks, each with the previous runs' past."""
    batch, length = ids.shape
    runner.reset(batch)
    out = np.zeros((batch, length))
    pos = 0
    while pos < length:
        n = min(prefill if pos == 0 else chunk, length - pos)
        logits = runner.step(ids[:, pos:pos + n])
        out[:, pos:pos + n] = _log_softmax_pick(logits, targets[:, pos:pos + n])
        pos += n
    return out


class AtcRunner:
    """An atcpy executable, the past carried as `runtime.Generator` carries it."""

    def __init__(self, exe: Any) -> None:
        from runtime import Generator

        self.gen = Generator(exe)
        self.spec = self.gen.spec
        self.names = [self.spec.logits] + [k.present for k in self.spec.kv]
        self.past: dict[str, np.ndarray] = {}
        self.pos = 0

    def reset(self, batch: int) -> None:
        self.past, self.pos = self.gen._empty_past(batch), 0

    def step(self, ids: np.ndarray) -> np.ndarray:
        spec, (b, n) = self.spec, ids.shape
        feeds = {spec.input_ids: ids.astype(spec.ids_dtype)}
        if spec.attention_mask is not None:
            feeds[spec.attention_mask] = np.ones((b, self.pos + n), spec.mask_dtype)
        if spec.position_ids is not None:
            feeds[spec.position_ids] = np.broadcast_to(np.arange(self.pos, self.pos + n, dtype=spec.pos_dtype),
                                                       (b, n)).copy()
        feeds.update(self.past)
        outs = self.gen.session.run(self.names, feeds, copy=False)
        logits = np.array(outs[0], dtype=np.float32)  # the arena's view is reused by the next run
        self.past = self.gen._next_past(outs)
        self.pos += n
        return logits

    def generate(self, prompt: np.ndarray, new: int) -> np.ndarray:
        return self.gen.generate(prompt, new)[:, prompt.shape[1]:]


class OrtRunner:
    """An optimum decoder in onnxruntime: the loop its users write, presents fed back as pasts."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 4
        ort.set_default_logger_severity(4)  # a variant that fails to load is a table row, not a log line
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.sess.get_inputs()}
        self.pasts = [n for n in self.inputs if n.startswith("past_key_values.")]
        self.names = ["logits"] + [n.replace("past_key_values.", "present.") for n in self.pasts]
        self.past: dict[str, np.ndarray] = {}
        self.pos = 0

    def reset(self, batch: int) -> None:
        self.pos, self.past = 0, {}
        for n in self.pasts:
            shape = [batch if d == "batch_size" else 0 if isinstance(d, str) else d for d in self.inputs[n].shape]
            self.past[n] = np.zeros(shape, np.float32)

    def step(self, ids: np.ndarray) -> np.ndarray:
        b, n = ids.shape
        feeds = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones((b, self.pos + n), np.int64), **self.past}
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.broadcast_to(np.arange(self.pos, self.pos + n, dtype=np.int64), (b, n)).copy()
        outs = self.sess.run(self.names, feeds)
        self.past = dict(zip(self.pasts, outs[1:]))
        self.pos += n
        return outs[0]


class TorchRunner:
    """The transformers model with its dynamic cache: the reference the exports came from."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache: Any = None

    def reset(self, batch: int) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()

    def step(self, ids: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model(input_ids=torch.from_numpy(ids.astype(np.int64)), past_key_values=self.cache,
                             use_cache=True)
        self.cache = out.past_key_values
        return out.logits.float().numpy()

    def generate(self, prompt: np.ndarray, new: int) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model.generate(torch.from_numpy(prompt.astype(np.int64)), max_new_tokens=new,
                                      min_new_tokens=new, do_sample=False,
                                      attention_mask=torch.ones(prompt.shape, dtype=torch.int64),
                                      pad_token_id=self.model.config.pad_token_id)
        return out.numpy()[:, prompt.shape[1]:]


# -- weight bytes -------------------------------------------------------------------------

_ONNX_MATMULS = ("MatMul", "Gemm", "MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def onnx_bytes(path: Path) -> tuple[int, int]:
    """(every initializer's bytes, the bytes of the MatMul-like ops' constant operands after the first)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    sizes = {t.name: numpy_helper.to_array(t).nbytes for t in proto.graph.initializer}
    seen: set[str] = set()
    for node in proto.graph.node:
        if node.op_type in _ONNX_MATMULS:
            seen.update(n for n in node.input[1:] if n in sizes)
    return sum(sizes.values()), sum(sizes[n] for n in seen)


def atc_bytes(exe: Any) -> tuple[int, int]:
    """(the report's weight bytes, the bytes of the weights MatMul-like steps read after their activation)."""
    weights = exe.weights
    seen: set[str] = set()
    for st in exe.program["steps"]:
        k = st["kernel"].lower()
        if "matmul" in k or k == "gemm":
            seen.update(ref[1] for ref in st["inputs"][1:] if ref and ref[0] == "w")
    total = int(exe.header["report"]["memory"].get("weights_bytes", sum(w.nbytes for w in weights.values())))
    return total, sum(int(weights[n].nbytes) for n in seen)


def kv_dtypes(exe: Any) -> set[str]:
    """The storage dtypes of an executable's compiled KV cache buffers."""
    acts = exe.program["activations"]
    out = set()
    for e in exe.program.get("kv_cache") or []:
        out.add(str(e.get("dtype") or acts[e["act"]]["dtype"]))
    return out


# -- onnxruntime's quantizers ---------------------------------------------------------------

@dataclass(frozen=True)
class OrtSpec:
    """One onnxruntime quantization: ``algo`` is ``rtn`` (MatMulNBitsQuantizer's default,
    MLAS's blockwise rounding), ``rtn-inc`` / ``gptq`` (its Intel Neural Compressor
    algorithms, 4 bits), ``hqq``, or ``dynamic`` (``quantize_dynamic``, int8 MatMuls)."""

    algo: str
    bits: int = 4
    block: int = 0
    sym: bool = True

    @property
    def name(self) -> str:
        if self.algo == "dynamic":
            return "quantize_dynamic"
        side = "" if self.algo == "hqq" else (" sym" if self.sym else " asym")
        return f"{self.algo.upper()}{side}"

    @property
    def bits_label(self) -> str:
        return "w8 a8 (dyn)" if self.algo == "dynamic" else f"w{self.bits} g{self.block}"


class _Reader:
    """A CalibrationDataReader over a list of feed dicts (GPTQ's calibration samples)."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.samples = samples
        self.it = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.it, None)

    def __iter__(self):
        return iter(self.samples)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizers print progress bars and log at INFO: keep the table readable."""
    was = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(was)


def ort_quantize(spec: OrtSpec, src: Path, dst: Path, samples: list[dict[str, np.ndarray]]) -> Path:
    """Write ``src`` quantized by onnxruntime as ``spec`` says to ``dst``."""
    import onnx

    with _quiet():
        if spec.algo == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
            return dst
        from onnxruntime.quantization import matmul_nbits_quantizer as mnb

        if spec.algo == "rtn":
            cfg = mnb.DefaultWeightOnlyQuantConfig(block_size=spec.block, is_symmetric=spec.sym, bits=spec.bits)
        elif spec.algo == "hqq":
            cfg = mnb.HQQWeightOnlyQuantConfig(block_size=spec.block, bits=spec.bits)
        elif spec.algo == "rtn-inc":
            cfg = mnb.RTNWeightOnlyQuantConfig()
        elif spec.algo == "gptq":
            cfg = mnb.GPTQWeightOnlyQuantConfig(calibration_data_reader=_Reader(samples))  # group: block_size below
        else:
            raise ValueError(f"unknown onnxruntime algorithm {spec.algo!r}")
        q = mnb.MatMulNBitsQuantizer(onnx.load(str(src)), bits=spec.bits, block_size=spec.block,
                                     is_symmetric=spec.sym, algo_config=cfg)
        q.process()
        onnx.save(q.model.model, str(dst))
    return dst
