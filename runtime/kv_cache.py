"""The KV caches a `Session` owns (``program["kv_cache"]``, one entry per cache).

Each cache gets a buffer at the bounds that lives across runs (`KvCaches.buffers`,
activation -> array; the Session views its prefix per run, `runtime.dims`).  A
compressed cache (entry ``dtype`` f16 or i8, `ir.ops.kv`) has the stored cache
(and, for i8, a second buffer of scales) and a present in the model's dtype that
no step writes:

- `read` computes that present from the stored cache when a caller asks for the
  output (a fresh array, never a view: the bytes are not the float values);
- `held_past` gives the past that stands for "what the cache holds": a read-only
  array of the past's shape and dtype on a small buffer of the Session's
  (`sentinel`, no memory per position).  Fed back as the next run's past,
  ``kv.append`` writes only the new positions (`runtime.kernels.kv`) — the
  compressed cache's in-place decode step, as a float cache's present fed back is.

    caches = KvCaches(program["kv_cache"], program["activations"], np_dtype)
    past = caches.held_past("past_key_values.0.key", env)          # after a run
    past = caches.held_past("past_key_values.0.key", env, drop=4)  # the 4 oldest positions dropped
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from runtime.errors import InputError
from runtime.kernels.kv import read_cache

__all__ = ["KvCaches"]


class KvCaches:
    """The buffers of a program's KV caches, and what reading compressed ones needs."""

    def __init__(self, entries: Sequence[dict[str, Any]], acts: Sequence[dict[str, Any]],
                 dtype_of: Callable[[str], np.dtype]) -> None:
        self.buffers: dict[int, np.ndarray] = {}
        self._reads: dict[int, tuple[int, int]] = {}  # present activation -> (cache, scales or -1)
        self._held: dict[str, tuple[dict[str, Any], np.dtype]] = {}  # past input -> (entry, its dtype)
        for e in entries:
            if not all(isinstance(c, int) for c in e["capacity"]):
                continue
            self.buffers[e["act"]] = np.zeros(e["capacity"], dtype_of(acts[e["act"]]["dtype"]))
            if "scale" in e:
                self.buffers[e["scale"]] = np.zeros(e["scale_capacity"], dtype_of(acts[e["scale"]]["dtype"]))
            if "present_act" in e:
                self._reads[e["present_act"]] = (e["act"], e.get("scale", -1))
                self._held[e["past"]] = (e, dtype_of(acts[e["present_act"]]["dtype"]))
        longest = max((e["capacity"][e["axis"]] for e, _ in self._held.values()), default=0)
        # the held pasts' one buffer: a stride of one item along the sequence axis, 0 elsewhere
        self.sentinel = np.zeros(max(longest, 1) * 8, np.uint8)
        self.sentinel.flags.writeable = False

    @property
    def held(self) -> frozenset[str]:
        """The past inputs of compressed caches (their presents are read back, not viewed)."""
        return frozenset(self._held)

    def read(self, act: int, env: Sequence[Any], dtype: np.dtype) -> np.ndarray | None:
        """The present activation `act` of a compressed cache, read back as `dtype`; None for others."""
        r = self._reads.get(act)
        if r is None:
            return None
        return read_cache(env[r[0]], env[r[1]] if r[1] >= 0 else None, dtype)

    def held_past(self, name: str, env: Sequence[Any], drop: int = 0) -> np.ndarray:
        """The past input `name` standing for its compressed cache as the last run left it,
        without its `drop` oldest positions (moved out of the buffer: a sliding window)."""
        if name not in self._held:
            raise InputError(f"{name!r} is not the past of a compressed KV cache "
                             f"(those are: {', '.join(sorted(self._held)) or 'none'})")
        e, dtype = self._held[name]
        cache = env[e["act"]]
        if cache is None:
            raise InputError(f"no run has written the KV cache of {name!r} yet")
        axis, n = e["axis"], cache.shape[e["axis"]]
        if not 0 <= drop <= n:
            raise InputError(f"cannot drop {drop} of the {n} positions the KV cache of {name!r} holds")
        if drop:
            for act in (e["act"], e.get("scale", -1)):
                if act >= 0:
                    _shift(self.buffers[act], cache.shape, axis, drop, n)
        shape = list(cache.shape)
        shape[axis] = n - drop
        strides = [0] * len(shape)
        strides[axis] = dtype.itemsize
        return np.ndarray(shape, dtype, buffer=self.sentinel, strides=strides)


def _shift(buf: np.ndarray, used: Sequence[int], axis: int, drop: int, n: int) -> None:
    """Move positions ``drop..n`` of `buf` along `axis` to the front (within the `used` extent)."""
    head = tuple(slice(0, used[i]) for i in range(axis))
    buf[head + (slice(0, n - drop),)] = buf[head + (slice(drop, n),)]
