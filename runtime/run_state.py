"""The memory one `Session.run` works in: a `RunState` per concurrent call.

A Session's bound program (steps, kernels, attributes, folded constants, the
arena's layout) is shared and never written while a run is under way.  Everything
a run writes lives in a `RunState`:

- the arena (one uint8 buffer of the plan's size) and the value table: a view
  into the arena per planned activation, the constants, this run's feeds;
- the Cube kernels' scratch buffers (`runtime.kernels.matmul.Scratch`);
- the KV cache buffers (`runtime.kv_cache.KvCaches`) and the current views of
  the symbolic-shape activations (`runtime.dims.DynamicViews`) with the symbol
  values they were made for;
- a copy of every step whose attributes hold this state's scratch, symbol values
  and held-past buffer, whose views are this arena's, and whose planned thunk
  (`runtime.kernels.planner`) binds numpy calls to those views; the caches a
  kernel fills in its step's attributes (the Winograd weight transform) are
  this state's too.

The Session keeps a pool of states: a run takes one (or makes a new one when
every state is in use by another thread), runs in it and gives it back, so
concurrent runs never share memory.  ``copy=False`` outputs are views of the
state's memory: valid until that state's next run.  A generation holds one state
for all its runs (`Session.hold`): its KV caches and held pasts are that state's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from runtime.dims import DynamicViews
from runtime.errors import RuntimeFailure
from runtime.f16 import Rounder, cast_to_held, round_to_f16
from runtime.kernels.matmul import Scratch
from runtime.kv_cache import KvCaches
from runtime.om import np_dtype
from runtime.profile import StepTiming

__all__ = ["HeldState", "RunState"]


@dataclass
class _Step:
    index: int
    kernel: str
    engine: str
    name: str
    fn: Any
    attrs: dict[str, Any]
    in_idx: list[int]  # env slot per operand, -1: absent
    out_idx: list[int]
    outs: list[np.ndarray | None]  # arena views (None: no slot)
    out_ptrs: list[int]
    ins: list[Any] | None  # bound once when every operand is static
    cost_cycles: float | None
    dyn_outs: list[tuple[int, int]] = field(default_factory=list)  # (result, activation) with symbolic shapes
    plan: Any = None  # the kernel's planner when every operand and result is a stable view (`runtime.kernels`)
    thunk: Any = None  # the planned call; None: plan at the next run; False: run the kernel
    scratch: bool = False  # the kernel takes the state's work buffers (``attrs["_scratch"]``)
    host_buf: Any = None  # sym.dims: (shape, dtype) of the small buffer its result is rewritten into
    rnd: tuple[int, ...] = ()  # results held as emulated f16: rounded to f16 after the step (`runtime.f16`)


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class RunState:
    """One run's memory (see the module docstring); `prog` is the `Session` it runs."""

    def __init__(self, prog: Any) -> None:
        raw = np.zeros(prog._arena_need + 64, dtype=np.uint8)
        base = (-_ptr(raw)) % 64  # 64-byte aligned base so every planned offset keeps its alignment
        self.arena = raw[base: base + prog._arena_need]
        self._raw = raw
        env = list(prog._consts)
        static = prog._static
        for i, off, nbytes, dt, shape in prog._arena_slots:
            if env[i] is None and static[i]:
                env[i] = self.arena[off: off + nbytes].view(dt).reshape(shape)
        self.env = env
        self.scratch = Scratch()
        acts = prog.executable.program["activations"]
        self.kv = KvCaches(prog.executable.program.get("kv_cache", []), acts, np_dtype)
        f16 = prog.f16
        self.dyn = DynamicViews(acts, self.arena, np_dtype, self.kv.buffers, scale=f16.scale, held=f16.held)
        self.rounder = Rounder() if f16.emulate else None
        self.dims: dict[str, int] = {}  # this run's symbol values, read by the shape program's steps
        self.last_dims: dict[str, int] | None = None
        self.steps: list[_Step] = []
        self.host_steps: list[tuple[_Step, frozenset[str]]] = []
        self.writers: dict[int, list[tuple[_Step, int]]] = {}  # symbolic activation -> (step, result)
        self.planned_by: dict[int, list[_Step]] = {}  # a replaceable view -> the planned steps using it

    def attach(self, prog: Any) -> RunState:
        """Bind a copy of each of `prog`'s steps to this state's memory."""
        self.steps = [self._bind(t, prog._static) for t in prog._templates]
        self.host_steps = [(self._bind(t, prog._static), syms) for t, syms in prog._host_templates]
        replaceable = prog._replaceable
        for st in self.steps:
            for j, i in st.dyn_outs:
                self.writers.setdefault(i, []).append((st, j))
            if st.plan is not None:
                for i in {*st.in_idx, *st.out_idx} & replaceable:
                    self.planned_by.setdefault(i, []).append(st)
        return self

    def _bind(self, t: _Step, static: list[bool]) -> _Step:
        attrs = dict(t.attrs)
        if t.scratch:
            attrs["_scratch"] = self.scratch
        if t.kernel == "sym.dims":
            attrs["_dims"] = self.dims
        elif t.kernel == "kv.append":  # a compressed cache's held past points into this buffer
            attrs["_held"] = self.kv.sentinel
        elif t.fn is cast_to_held:  # rounds from its operand straight into its view
            attrs["_rounder"] = self.rounder
        env = self.env
        outs = [env[i] if static[i] else None for i in t.out_idx]
        if t.host_buf is not None:
            outs = [np.zeros(*t.host_buf)]  # rewritten in place per binding
        ins = [env[i] if i >= 0 else None for i in t.in_idx] if all(i < 0 or static[i] for i in t.in_idx) else None
        return replace(t, attrs=attrs, outs=outs, out_ptrs=[_ptr(o) if o is not None else 0 for o in outs],
                       ins=ins, thunk=None)

    # -- running ----------------------------------------------------------------------
    def execute(self, timings: list[StepTiming] | None, keep: Any = None) -> None:
        """Run every step on the bound feeds; appends per-step times to `timings` when given.
        ``keep(step)`` (a debug run, `Session.run_all`) is called after each step, before the
        arena reuses its results' bytes."""
        env = self.env
        prof = timings is not None
        if prof:
            t_base = time.perf_counter()
        try:
            for st in self.steps:
                if prof:
                    t0 = time.perf_counter()
                th = st.thunk
                if th:  # planned: the kernel's call with its views bound
                    th()
                else:
                    ins = st.ins if st.ins is not None else [env[i] if i >= 0 else None for i in st.in_idx]
                    if th is None and st.plan is not None:
                        th = st.thunk = st.plan(ins, st.attrs, st.outs) or False
                    if th:
                        th()
                    else:
                        res = st.fn(ins, st.attrs, st.outs)
                        outs = st.outs
                        if not (len(outs) == 1 and res and res[0] is outs[0]):  # else: written in place
                            self._store(st, res)
                if st.rnd:
                    self._round(st)
                if keep is not None:
                    keep(st)
                if prof:
                    t1 = time.perf_counter()
                    timings.append(StepTiming(st.index, st.kernel, st.engine, st.name, t1 - t0, t0 - t_base,
                                              st.cost_cycles))
        except (RuntimeFailure, MemoryError):
            raise
        except Exception as e:
            raise RuntimeFailure(f"step {st.index} ({st.kernel} {st.name!r}) failed: {type(e).__name__}: {e}") from e

    def bind_symbols(self, dims: dict[str, int]) -> None:
        """Point every symbolic activation whose shape changed since this state's last
        binding (and the steps writing it) at its new view; re-run the shape program's
        steps whose symbols changed."""
        last = self.last_dims
        if dims == last:
            return
        self.dims.clear()
        self.dims.update(dims)
        env = self.env
        writers, planned = self.writers, self.planned_by
        for i, v, ptr in self.dyn.changed(dims):
            env[i] = v
            for st, j in writers.get(i, ()):
                st.outs[j] = v
                st.out_ptrs[j] = ptr
            for st in planned.get(i, ()):
                st.thunk = None
        for st, syms in self.host_steps:
            if last is None or any(dims.get(s) != last.get(s) for s in syms):
                try:
                    res = st.fn([], st.attrs, st.outs)  # into its own small buffer when the shape fits
                except Exception as e:
                    raise RuntimeFailure(f"step {st.index} ({st.kernel} {st.name!r}) failed: "
                                         f"{type(e).__name__}: {e}") from e
                i = st.out_idx[0]
                if res[0] is not env[i]:  # a new array: the steps planned on the old one plan again
                    env[i] = res[0]
                    for p_st in planned.get(i, ()):
                        p_st.thunk = None
        self.last_dims = dims

    def _store(self, st: _Step, res: Any) -> None:
        """Put step `st`'s results in place: copied into their arena views unless the
        kernel wrote there itself, kept as they are for values without a slot."""
        env, arena = self.env, self.arena
        for j, slot_ in enumerate(st.out_idx):
            if j >= len(res):
                raise RuntimeFailure(f"step {st.index} ({st.kernel} {st.name!r}) returned {len(res)} results, "
                                     f"expected {len(st.out_idx)}")
            r = res[j]
            view = st.outs[j]
            if view is None:
                r = np.asarray(r)
                if arena.size and np.may_share_memory(r, arena):
                    r = r.copy()  # the slot it views may be reused by a later step
                env[slot_] = r
            elif r is not view:
                if not isinstance(r, np.ndarray):
                    r = np.asarray(r)
                if r.shape != view.shape:
                    raise RuntimeFailure(f"step {st.index} ({st.kernel} {st.name!r}): result {j} has shape "
                                         f"{list(r.shape)}, the program says {list(view.shape)}")
                if _ptr(r) != st.out_ptrs[j] or r.strides != view.strides or r.dtype != view.dtype:
                    np.copyto(view, r, casting="unsafe")

    def _round(self, st: _Step) -> None:
        """Make step `st`'s emulated f16 results f16 values: their views in place, a
        result without a slot as a new float32 array (it may be an operand's)."""
        for j in st.rnd:
            v = st.outs[j]
            if v is not None:
                self.rounder(v)
            else:
                i = st.out_idx[j]
                self.env[i] = round_to_f16(self.env[i])

    def held_past(self, name: str, drop: int = 0) -> np.ndarray:
        return self.kv.held_past(name, self.env, drop)


class HeldState:
    """A state a caller holds across runs (`Session.hold`): a generation's runs share
    its KV caches, and its ``copy=False`` outputs stay valid until its next run."""

    def __init__(self, session: Any, state: RunState) -> None:
        self.session = session
        self.state = state

    def run(self, output_names: list[str] | None, feeds: dict[str, Any], *, profile: bool = False,
            copy: bool = True) -> list[np.ndarray]:
        """`Session.run` in this state."""
        return self.session.run(output_names, feeds, profile=profile, copy=copy, state=self)

    def held_past(self, name: str, drop: int = 0) -> np.ndarray:
        """`Session.held_past` for this state's KV caches."""
        return self.state.held_past(name, drop)

    @property
    def kv_buffers(self) -> dict[int, np.ndarray]:
        return self.state.kv.buffers
