"""`Generator`: run a compiled decoder LLM token by token, shaped like transformers' `generate`.

    gen = Generator("out/llama.om")           # or an Executable, or a Session
    ids = gen.generate(prompt_ids, max_new_tokens=64)               # greedy
    ids = gen.generate(prompt_ids, 64, do_sample=True, top_k=40, top_p=0.9, seed=0)
    print(gen.stats)   # first-token ms, decode tokens/s, per-step ms

The model is an exported decoder with a KV cache (optimum's
``text-generation-with-past``, GPT-2's variants): it takes ``input_ids`` and the
past (``past_key_values.N.key|value``, or one ``past_N`` holding both), perhaps
``attention_mask`` and ``position_ids``, and returns ``logits`` and the present
(``present.N.key|value``).  The generator finds these by name and shape from the
executable's inputs and outputs; it needs no configuration.

One generation is a prefill (the prompt, in one run or in chunks of the compiled
``sequence_length`` bound), then one run per new token whose past is the previous
run's present.  The past starts empty (length 0).  ``attention_mask`` is all ones
unless the caller passes one for a left-padded batch; ``position_ids`` follow it
as transformers computes them (``cumsum(mask) - 1``, 1 where masked).

Length: the compiled bound of the past's dim (``past_sequence_length: 0~63``) is
the model's window, ``max_len = hi + 1`` positions one run attends over.  A
generation's longest run sees ``prompt + max_new_tokens - 1`` positions (the last
new token is never fed back); beyond ``max_len`` `generate` raises `InputError`
before anything runs, unless ``window=True``: then the past keeps only its
latest positions (at most ``max_len - 1`` before a decode step), like a ring
buffer, while the positions fed to the model keep increasing.  Tokens older than
the window are forgotten, so the output is no longer what the full model would
give; with learned absolute positions (GPT-2) generation stops with an error
once the positions pass the model's position table.

The past/present hand-off goes through `Generator._next_past` and
`Generator._drop_oldest` only, so an executable that keeps its KV cache in
place (``program["kv_cache"]``) can switch those two without touching the loop.
A compressed cache (``--kv_cache_dtype``) is not read at all: its past is the
session's held past (`Session.held_past`), and the window drops positions in its buffer.
A generation runs in one state it holds (`Session.hold`): threads may share a Session, a Generator each.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.errors import InputError, RuntimeFailure
from runtime.om import Executable, np_dtype
from runtime.sampling import sample

__all__ = ["DecoderSpec", "GenerationStats", "Generator", "UnsupportedDecoderError"]


class UnsupportedDecoderError(RuntimeFailure):
    """The executable is not a decoder the generator can drive (exit code 3, as an unsupported model)."""

    exit_code = 3
    kind = "unsupported model"


@dataclass
class GenerationStats:
    """Timing of the last `Generator.generate` call.

    ``first_token_ms`` is the prefill (every chunk) plus choosing the first token;
    ``step_ms`` one entry per decode step (a run plus choosing its token);
    ``decode_tokens_per_s`` counts tokens per sequence, as llama.cpp does."""

    batch: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_runs: int = 0
    first_token_ms: float = 0.0
    decode_ms: float = 0.0
    decode_tokens_per_s: float = 0.0
    step_ms: list[float] = field(default_factory=list)

    @property
    def mean_step_ms(self) -> float:
        return self.decode_ms / len(self.step_ms) if self.step_ms else 0.0

    @property
    def prompt_tokens_per_s(self) -> float:
        return 1e3 * self.prompt_tokens / self.first_token_ms if self.first_token_ms > 0 else 0.0


@dataclass(frozen=True)
class _KV:
    past: str  # input name
    present: str  # output name
    axis: int  # the sequence axis
    shape: tuple[Any, ...]  # the input's declared shape (ints and symbols)
    dtype: np.dtype


@dataclass(frozen=True)
class DecoderSpec:
    """What the generator found in the executable's interface."""

    input_ids: str
    logits: str
    attention_mask: str | None
    position_ids: str | None
    kv: tuple[_KV, ...]
    ids_dtype: np.dtype
    mask_dtype: np.dtype | None
    pos_dtype: np.dtype | None
    batch_dim: Any  # input_ids' dim 0: an int or a symbol
    seq_dim: Any  # input_ids' dim 1
    past_dim: str  # the symbol of the past's sequence axis
    vocab: int | None
    extra: tuple[tuple[str, str], ...]  # (input name, how it is fed): "cache_branch" or "zeros"


_PAST = re.compile(r"^past(?:_key_values|_kv)?[._]?(\d+)(?:[._](key|value))?$")
_PRESENT = re.compile(r"^present(?:_key_values|_kv)?[._]?(\d+)(?:[._](key|value))?$")
_IDS = ("input_ids", "input", "tokens", "token_ids")


def find_decoder(inputs: Sequence[Any], outputs: Sequence[Any], kv_cache: Sequence[dict] | None = None
                 ) -> DecoderSpec:
    """Match a decoder's inputs and outputs (`Session.get_inputs()` / `get_outputs()` NodeArgs)."""
    by_in = {i.name: i for i in inputs}
    by_out = {o.name: o for o in outputs}
    ids = next((by_in[n] for n in _IDS if n in by_in), None)
    if ids is None or len(ids.shape) != 2:
        raise UnsupportedDecoderError(
            "not a decoder with a KV cache: no 2-D 'input_ids' input (inputs: "
            + ", ".join(repr(n) for n in by_in) + ")")
    presents = {}
    for o in outputs:
        m = _PRESENT.match(o.name)
        if m:
            presents[(int(m.group(1)), m.group(2))] = o.name
    axes = {e["past"]: int(e["axis"]) for e in (kv_cache or []) if "past" in e and "axis" in e}
    kv: list[_KV] = []
    past_dims: set[str] = set()
    used = {ids.name}
    for i in inputs:
        m = _PAST.match(i.name)
        if not m:
            continue
        key = (int(m.group(1)), m.group(2))
        if key not in presents:
            raise UnsupportedDecoderError(f"past input {i.name!r} has no matching present output "
                                          f"(outputs: {', '.join(repr(n) for n in by_out)})")
        syms = [(a, d) for a, d in enumerate(i.shape) if isinstance(d, str) and d != ids.shape[0]]
        axis = axes.get(i.name, syms[-1][0] if syms else -1)
        if axis < 0 or not isinstance(i.shape[axis], str):
            raise UnsupportedDecoderError(f"past input {i.name!r} has the fixed shape {i.shape}: "
                                          "compile with a symbolic past length (--dim_range)")
        past_dims.add(i.shape[axis])
        kv.append(_KV(i.name, presents[key], axis, tuple(i.shape), np_dtype(i.dtype)))
        used.add(i.name)
    if not kv:
        raise UnsupportedDecoderError("not a decoder with a KV cache: no 'past_key_values.N.key|value' inputs")
    if len(past_dims) != 1:
        raise UnsupportedDecoderError(f"the past inputs disagree on their length dim: {sorted(past_dims)}")
    logits = by_out.get("logits") or next((o for o in outputs if not _PRESENT.match(o.name)), None)
    if logits is None:
        raise UnsupportedDecoderError("no 'logits' output")
    mask = by_in.get("attention_mask")
    pos = by_in.get("position_ids")
    used |= {n for n in ("attention_mask", "position_ids") if n in by_in}
    extra = []
    for i in inputs:
        if i.name in used:
            continue
        if i.name == "use_cache_branch":
            extra.append((i.name, "cache_branch"))
        elif i.name == "token_type_ids":
            extra.append((i.name, "zeros"))
        else:
            raise UnsupportedDecoderError(f"don't know how to feed decoder input {i.name!r} ({i.type} {i.shape})")
    vocab = logits.shape[-1] if logits.shape and isinstance(logits.shape[-1], int) else None
    return DecoderSpec(ids.name, logits.name, mask.name if mask else None, pos.name if pos else None, tuple(kv),
                       np_dtype(ids.dtype), np_dtype(mask.dtype) if mask else None,
                       np_dtype(pos.dtype) if pos else None, ids.shape[0], ids.shape[1], past_dims.pop(), vocab,
                       tuple(extra))


@dataclass
class _State:
    """One generation's buffers and position: the tokens, the whole mask and
    positions (each run feeds views of them), the past, where the window starts
    and how many positions the model has seen."""

    tokens: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    done: np.ndarray
    past: dict[str, np.ndarray]
    window: bool
    choose: Callable[[np.ndarray], np.ndarray]
    eos: list[int]
    pad: int | None
    put: Callable[[np.ndarray], Any] | None
    start: int = 0  # the first position still in the past (the window's start)
    pos_n: int = 0  # positions the model has seen


class Generator:
    """Greedy or sampled generation with a compiled decoder (see the module docstring).

    ``model`` is an `.om` path, its bytes, an `Executable` or a `runtime.Session`."""

    def __init__(self, model: str | os.PathLike | bytes | Executable | Any) -> None:
        from runtime.session import Session

        self.session = model if isinstance(model, Session) else Session(model)
        prog = self.session.executable.program
        self.spec = find_decoder(self.session.get_inputs(), self.session.get_outputs(), prog.get("kv_cache"))
        dims = {k: (int(lo), int(hi)) for k, (lo, hi) in (prog.get("dims") or {}).items()}
        self._dims = dims
        past = dims.get(self.spec.past_dim)
        lens = [int(e["max_len"]) for e in (prog.get("kv_cache") or []) if e.get("max_len")]
        # positions one run attends over: the longest past plus the token it computes
        self.max_len: int | None = min(lens) if lens else (past[1] + 1 if past else None)
        sd = self.spec.seq_dim
        self.max_chunk: int | None = sd if isinstance(sd, int) else (dims[sd][1] if sd in dims else None)
        # a compressed cache's present is not read: its held past is fed back instead
        held = self.session.held_pasts
        self._read = [k for k in self.spec.kv if k.past not in held]
        self._held = [k for k in self.spec.kv if k.past in held]
        self._out_names = [self.spec.logits] + [k.present for k in self._read]
        self.stats = GenerationStats()
        self._runs: Any = self.session  # a generation runs in one held state (`Session.hold`): its KV caches

    # -- the past: the only places that know how it is carried from run to run ----------
    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """Zero-length pasts, shaped and typed as the inputs declare."""
        past = {}
        for k in self.spec.kv:
            shape = []
            for a, d in enumerate(k.shape):
                if a == k.axis:
                    shape.append(0)
                elif isinstance(d, int):
                    shape.append(d)
                elif d == self.spec.batch_dim:
                    shape.append(batch)
                else:
                    raise UnsupportedDecoderError(f"past input {k.past!r}: cannot size its dim {d!r}")
            past[k.past] = np.zeros(shape, k.dtype)
        return past

    def _next_past(self, outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The next run's past from this run's outputs (``[logits, present...]``, in
        `self._read` order): each present is fed back as it is — with a compiled
        KV cache, a view of the cache buffer, so nothing is copied; a compressed
        cache's past is the session's held past (`Session.held_past`), no copy either."""
        past = {k.past: p for k, p in zip(self._read, outputs[1:])}
        past.update((k.past, self._runs.held_past(k.past)) for k in self._held)
        return past

    def _drop_oldest(self, past: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """The past without its ``n`` oldest positions (the sliding window); views, no copy
        (a compressed cache moves its positions in its buffer)."""
        out = {k.past: self._runs.held_past(k.past, drop=n) for k in self._held}
        for k in self._read:
            index = [slice(None)] * past[k.past].ndim
            index[k.axis] = slice(n, None)
            out[k.past] = past[k.past][tuple(index)]
        return out

    # -- checks -----------------------------------------------------------------------
    def _check_batch(self, batch: int) -> None:
        bd = self.spec.batch_dim
        if isinstance(bd, int):
            if batch != bd:
                raise InputError(f"input_ids has batch {batch}, the model was compiled for batch {bd}")
        elif bd in self._dims:
            lo, hi = self._dims[bd]
            if not lo <= batch <= hi:
                raise InputError(f"input_ids has batch {batch}, the model was compiled for {bd} {lo}~{hi}")

    def _check_length(self, prompt: int, new: int, window: bool) -> None:
        if self.max_len is None:
            return
        longest = prompt + new - 1  # the last new token is never fed back
        if not window and longest > self.max_len:
            lo_hi = self._dims.get(self.spec.past_dim, (0, self.max_len - 1))
            raise InputError(
                f"prompt of {prompt} token(s) + max_new_tokens={new} needs {longest} positions in the last run, "
                f"the model holds at most {self.max_len} ({self.spec.past_dim} {lo_hi[0]}~{lo_hi[1]} plus the new "
                f"token); compile with a larger --dim_range, generate fewer tokens, or ask for a sliding "
                f"window (window=True, atcpy-run --window)")

    # -- generation ---------------------------------------------------------------------
    def generate(self, input_ids: Any, max_new_tokens: int, eos_token_id: int | Sequence[int] | None = None,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None, streamer: Any = None, *, attention_mask: Any = None,
                 pad_token_id: int | None = None, window: bool = False) -> np.ndarray:
        """``[batch, prompt + new]`` int64 token ids: the prompt followed by up to
        ``max_new_tokens`` new tokens, as transformers' ``generate`` returns them.

        Generation stops early when every row has produced an ``eos_token_id``;
        finished rows are filled with ``pad_token_id`` (default: the first eos id).
        Sampling applies temperature, then top-k, then top-p (as transformers'
        warpers do) and draws from a ``numpy.random.default_rng(seed)``.
        ``streamer``: a callable gets each new token batch (``[batch]`` int64); an
        object with ``put``/``end`` (transformers' streamers) gets ``put(prompt)``,
        then ``put(tokens)`` per step, then ``end()``, as transformers calls it.
        ``attention_mask`` (``[batch, prompt]``, 0 for left padding) is optional.
        ``window=True`` slides the past over the compiled bound instead of raising."""
        ids = _as_ids(input_ids)
        batch, prompt = ids.shape
        new = _check_int("max_new_tokens", max_new_tokens, 0)
        eos = _eos_list(eos_token_id)
        if pad_token_id is None and eos:
            pad_token_id = eos[0]
        mask = self._check_args(ids, do_sample, temperature, top_k, top_p, attention_mask)
        self._check_batch(batch)
        self._check_length(prompt, new, window)
        rng = np.random.default_rng(seed) if do_sample else None

        def choose(logits: np.ndarray) -> np.ndarray:
            if rng is None:
                return logits.argmax(-1).astype(np.int64)
            return sample(logits, rng, temperature, top_k, top_p)

        put, end = _streamer_calls(streamer)
        if put is not None and hasattr(streamer, "put"):
            streamer.put(ids.copy())
        self.stats = GenerationStats(batch=batch, prompt_tokens=prompt)
        st = _State(*self._buffers(ids, mask, new), done=np.zeros(batch, bool), past=self._empty_past(batch),
                    window=window, choose=choose, eos=eos, pad=pad_token_id, put=put)
        with self.session.hold() as self._runs:  # other threads run the session in other states meanwhile
            try:
                n_new = self._decode(st, prompt, new, self._prefill(st, prompt)) if new else 0
            finally:
                self._runs = self.session
        if end is not None:
            end()
        return st.tokens[:, :prompt + n_new]

    def _check_args(self, ids: np.ndarray, do_sample: bool, temperature: float, top_k: int, top_p: float,
                    attention_mask: Any) -> np.ndarray | None:
        """The sampling knobs and token ids checked; the attention mask as ``[batch, prompt]``."""
        if do_sample:
            if not (isinstance(temperature, (int, float)) and temperature > 0 and np.isfinite(temperature)):
                raise InputError(f"temperature={temperature!r} must be a positive number")
            _check_int("top_k", top_k, 0)
            if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
                raise InputError(f"top_p={top_p!r} must be in (0, 1]")
        if self.spec.vocab is not None and (ids.min(initial=0) < 0 or ids.max(initial=0) >= self.spec.vocab):
            raise InputError(f"input_ids must be token ids in [0, {self.spec.vocab}), "
                             f"received values in [{ids.min()}, {ids.max()}]")
        if attention_mask is None:
            return None
        mask = np.asarray(attention_mask)
        if mask.ndim == 1:
            mask = mask[None]
        if mask.shape != ids.shape:
            raise InputError(f"attention_mask has shape {list(mask.shape)}, input_ids {list(ids.shape)}")
        return mask

    def _buffers(self, ids: np.ndarray, mask: np.ndarray | None, new: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tokens, the whole mask and the positions, up front: each run feeds views of them."""
        batch, prompt = ids.shape
        total = prompt + new
        tokens = np.empty((batch, total), np.int64)
        tokens[:, :prompt] = ids
        full_mask = np.ones((batch, total), self.spec.mask_dtype or np.int64)
        if mask is not None:
            full_mask[:, :prompt] = mask
        positions = np.empty((batch, total), self.spec.pos_dtype or np.int64)
        cum = np.cumsum(full_mask[:, :prompt], axis=1) - 1
        positions[:, :prompt] = np.where(full_mask[:, :prompt] == 0, 1, cum)
        return tokens, full_mask, positions

    def _step(self, st: _State, c: int) -> np.ndarray:
        """One run over the next `c` positions; returns the next tokens."""
        st.past, st.start = self._fit(st.past, st.start, st.pos_n, c, st.window)
        outs = self._run(st.tokens, st.mask, st.positions, st.past, st.start, st.pos_n, c)
        st.past = self._next_past(outs)
        st.pos_n += c
        return st.choose(outs[0][:, -1, :])

    def _prefill(self, st: _State, prompt: int) -> int:
        """Run the prompt (in chunks of the compiled sequence bound); returns the tokens it added."""
        t_start = time.perf_counter()
        chunk = prompt if self.max_chunk is None else self.max_chunk
        if st.window and self.max_len is not None:
            chunk = min(chunk, self.max_len)
        runs, nxt = 0, None
        while st.pos_n < prompt:
            nxt = self._step(st, min(chunk, prompt - st.pos_n))
            runs += 1
        self.stats.prefill_runs = runs
        n_new = self._append(st.tokens, nxt, st.done, prompt, st.eos, st.pad, st.put) - prompt
        self.stats.first_token_ms = (time.perf_counter() - t_start) * 1e3
        return n_new

    def _decode(self, st: _State, prompt: int, new: int, n_new: int) -> int:
        """One token per run until `new` tokens or every row has stopped; returns how many."""
        steps = self.stats.step_ms
        while n_new < new and not st.done.all():
            t0 = time.perf_counter()
            cur = prompt + n_new
            st.positions[:, cur - 1] = st.positions[:, cur - 2] + 1 if cur >= 2 else 0
            nxt = self._step(st, 1)
            n_new = self._append(st.tokens, nxt, st.done, cur, st.eos, st.pad, st.put) - prompt
            steps.append((time.perf_counter() - t0) * 1e3)
        stats = self.stats
        stats.new_tokens = n_new
        stats.decode_ms = float(sum(steps))
        stats.decode_tokens_per_s = 1e3 * len(steps) / stats.decode_ms if stats.decode_ms > 0 else 0.0
        return n_new

    def _fit(self, past: dict[str, np.ndarray], start: int, pos_n: int, c: int, window: bool
             ) -> tuple[dict[str, np.ndarray], int]:
        """Slide the window so a run of ``c`` tokens sees at most ``max_len`` positions."""
        if not window or self.max_len is None:
            return past, start
        over = (pos_n - start) + c - self.max_len
        if over > 0:
            past = self._drop_oldest(past, over)
            start += over
        return past, start

    def _run(self, tokens: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: dict[str, np.ndarray],
             start: int, pos_n: int, c: int) -> list[np.ndarray]:
        spec = self.spec
        feeds: dict[str, np.ndarray] = {spec.input_ids: tokens[:, pos_n:pos_n + c].astype(spec.ids_dtype, copy=False)}
        if spec.attention_mask is not None:
            feeds[spec.attention_mask] = mask[:, start:pos_n + c]
        if spec.position_ids is not None:
            feeds[spec.position_ids] = positions[:, pos_n:pos_n + c]
        for name, how in spec.extra:
            if how == "cache_branch":
                feeds[name] = np.array([pos_n > start], dtype=bool)
            else:
                feeds[name] = np.zeros((tokens.shape[0], c), spec.ids_dtype)
        feeds.update(past)
        # copy=False: the outputs as they sit in the session's memory (valid until the next run); a
        # compiled KV cache's present is then a view of its buffer, and fed back as the next past the
        # kv.append step writes only the new positions
        return self._runs.run(self._out_names, feeds, copy=False)

    @staticmethod
    def _append(tokens: np.ndarray, nxt: np.ndarray, done: np.ndarray, at: int, eos: list[int],
                pad: int | None, put: Callable[[np.ndarray], Any] | None) -> int:
        """Write the chosen tokens at column ``at`` (pad for finished rows); returns ``at + 1``."""
        if pad is not None and done.any():
            nxt = np.where(done, pad, nxt)
        tokens[:, at] = nxt
        if eos:
            done |= np.isin(nxt, eos)
        if put is not None:
            put(nxt.copy())
        return at + 1


# -- argument helpers -------------------------------------------------------------------

def _as_ids(input_ids: Any) -> np.ndarray:
    try:
        ids = np.asarray(input_ids)
    except (TypeError, ValueError) as e:
        raise InputError(f"input_ids: not an array of token ids: {e}") from None
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
        raise InputError(f"input_ids must be [batch, prompt] token ids with a non-empty prompt, "
                         f"received shape {list(ids.shape)}")
    if ids.dtype.kind not in "iu":
        raise InputError(f"input_ids must be integers, received {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def _check_int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < lo:
        raise InputError(f"{name}={v!r} must be an integer >= {lo}")
    return int(v)


def _eos_list(eos: int | Sequence[int] | None) -> list[int]:
    if eos is None:
        return []
    if isinstance(eos, (int, np.integer)):
        return [int(eos)]
    return [int(e) for e in eos]


def _streamer_calls(streamer: Any) -> tuple[Callable[[np.ndarray], Any] | None, Callable[[], Any] | None]:
    if streamer is None:
        return None, None
    if hasattr(streamer, "put"):
        return streamer.put, getattr(streamer, "end", None)
    if callable(streamer):
        return streamer, None
    raise InputError(f"streamer must be a callable or have .put()/.end(), received {type(streamer).__name__}")
