"""A small byte-level LLaMA trained here, on text every Python install ships: the
standard library's own sources.  The model and data for `bench/perplexity.py`.

Corpus: the ``*.py`` files directly under ``sysconfig.get_paths()["stdlib"]``,
sorted by name; every `HOLDOUT_EVERY`-th file (from index `HOLDOUT_AT`) is held
out for evaluation, the rest is training text.  Each file is its bytes after a
BOS token (256), so the vocabulary is the 256 byte values plus a few specials.

Training (torch, a test-only tool): AdamW, linear warmup then cosine decay,
random 256-byte windows of the training text drawn by a seeded numpy generator,
``torch.manual_seed``; the same config gives the same model.  The trained model
is saved with ``save_pretrained`` and exported with optimum
(``text-generation-with-past``, `tests.llm.decoders.export_decoder`) into a
cache directory named by a hash of the config, the corpus and the versions, so
a rerun loads it instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["BOS", "Corpus", "TrainConfig", "ensure_model", "load_corpus", "unigram_perplexity"]

BOS, EOS, PAD = 256, 257, 258
VOCAB = 260  # 256 bytes + BOS, EOS, PAD and one spare
HOLDOUT_EVERY, HOLDOUT_AT = 8, 3
KIND = "bytellama"  # file names: <dir>/<hash>/bytellama.onnx and bytellama.torch/


@dataclass(frozen=True)
class TrainConfig:
    """The model's shape and its training run; `bench/perplexity.py`'s defaults are
    the bench's model, the test uses a tiny one."""

    layers: int = 4
    hidden: int = 256
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 768  # LLaMA's rule: 8/3 hidden rounded up to a multiple of 256
    context: int = 256
    steps: int = 500
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 30
    seed: int = 0
    threads: int = 2

    def key(self) -> str:
        """A short hash of everything the trained weights depend on."""
        import torch
        import transformers

        parts = {**asdict(self), "threads": None, "python": platform.python_version(), "torch": torch.__version__,
                 "transformers": transformers.__version__, "holdout": [HOLDOUT_EVERY, HOLDOUT_AT], "vocab": VOCAB}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Corpus:
    """Token streams (uint16, BOS before each file) of the training and held-out files."""

    train: np.ndarray
    heldout: np.ndarray
    train_files: int
    heldout_files: int


def load_corpus() -> Corpus:
    """The stdlib's top-level ``*.py`` files, split deterministically (see the module doc)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    if len(files) < 2 * HOLDOUT_EVERY:
        raise RuntimeError(f"too few stdlib sources under {root} ({len(files)} *.py files)")
    train, held = [], []
    for i, f in enumerate(files):
        toks = np.concatenate([[BOS], np.frombuffer(f.read_bytes(), np.uint8)]).astype(np.uint16)
        (held if i % HOLDOUT_EVERY == HOLDOUT_AT else train).append(toks)
    return Corpus(np.concatenate(train), np.concatenate(held), len(train), len(held))


def unigram_perplexity(train: np.ndarray, targets: np.ndarray) -> float:
    """Per-token perplexity of ``targets`` under the training text's byte frequencies
    (add-one smoothed): the bar a model that ignores context would reach."""
    counts = np.bincount(train, minlength=VOCAB).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[targets.astype(np.int64)].mean()))


def llama_config(cfg: TrainConfig) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(num_hidden_layers=cfg.layers, hidden_size=cfg.hidden, num_attention_heads=cfg.heads,
                       num_key_value_heads=cfg.kv_heads, intermediate_size=cfg.intermediate, vocab_size=VOCAB,
                       max_position_embeddings=cfg.context, bos_token_id=BOS, eos_token_id=EOS,
                       pad_token_id=PAD, tie_word_embeddings=False)


def _lr(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(cfg: TrainConfig, corpus: Corpus, log: Any = print) -> tuple[Any, dict[str, Any]]:
    """Train the model of ``cfg`` on ``corpus.train``; returns it (eval mode) and a summary."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(llama_config(cfg), attn_implementation="sdpa")
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(cfg.seed)
    data = torch.from_numpy(corpus.train.astype(np.int64))
    n = cfg.context + 1
    t0, losses = time.perf_counter(), []
    for step in range(cfg.steps):
        starts = rng.integers(0, len(data) - n, cfg.batch)
        x = torch.stack([data[s:s + n] for s in starts])
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % max(1, cfg.steps // 10) == 0:
            recent = float(np.mean(losses[-20:]))
            log(f"  step {step + 1}/{cfg.steps}: loss {recent:.3f} (ppl {math.exp(recent):.2f}), "
                f"{time.perf_counter() - t0:.0f} s")
    info = {"train_s": time.perf_counter() - t0, "final_loss": float(np.mean(losses[-20:])),
            "tokens": cfg.steps * cfg.batch * cfg.context, "params": sum(p.numel() for p in model.parameters())}
    return model.eval(), info


def ensure_model(cfg: TrainConfig, corpus: Corpus, cache: Path, log: Any = print) -> tuple[Path, dict[str, Any]]:
    """The ONNX export of ``cfg``'s trained model (trained and exported on first use,
    under ``cache/<key>/``) and its training summary."""
    from tests.llm.decoders import export_decoder

    out = Path(cache) / f"{KIND}-{cfg.key()}"
    onnx_path, meta = out / f"{KIND}.onnx", out / "train.json"
    if onnx_path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        info["cached"] = True
        return onnx_path, info
    if log is not None:
        log(f"training {cfg} on {corpus.train_files} stdlib files ({len(corpus.train)} bytes) -> {out}")
    model, info = train(cfg, corpus, log)
    t0 = time.perf_counter()
    export_decoder(KIND, out, model=model)
    info.update(config=asdict(cfg), export_s=time.perf_counter() - t0, cached=False)
    meta.write_text(json.dumps(info, indent=1))
    return onnx_path, info


def load_torch(onnx_path: Path) -> Any:
    """The trained transformers model saved next to ``onnx_path`` (eval mode)."""
    from tests.llm.decoders import load_torch_decoder

    return load_torch_decoder(onnx_path)
