"""`Session`: run an `.om` executable, shaped like onnxruntime's InferenceSession.

    sess = Session("out/mlp.om")
    [y] = sess.run(None, {"x": x})
    sess.run(None, {"x": x}, profile=True); print(sess.profile.table())

At load time the session lays out ONE arena (a numpy uint8 buffer of the
plan's size; each run state has one), a typed view for every planned activation
at its offset, and binds each step's operand list once: weights are read-only zero-copy views
into the loaded file, arena values are their views.  Only graph inputs and
values without a slot (dynamic shapes) are looked up per run.  A kernel that
returns its arena view (or a view onto the same bytes, e.g. a Reshape the
plan aliased) costs no copy; anything else is copied into the view.

Also at load: steps whose operands are all constants run once and their results
become constants (`Session.folded_steps`); a Concat whose operands the plan put
in their slices of its result has nothing to do and is dropped
(`Session.elided_steps`); the Cube kernels share one set of
scratch buffers (im2col columns, padded inputs, partial products) that the
first run sizes and later runs reuse.

Threads: the bound program is shared and read-only while runs are under way;
what a run writes (arena, scratch, KV caches, dynamic views, planned thunks)
lives in a `runtime.run_state.RunState` taken from the session's pool, so
concurrent `run` calls need no lock.  ``copy=False`` outputs are views of that
state's memory, valid until its next run; `hold` keeps one state for a series of
runs (a generation: its KV caches and held pasts).

float16: a program with f16 activations holds them as float32 values that are
exactly f16 values (``f16_storage="emulated"``, the default; `runtime.f16`): the
arena is twice the plan's bytes at doubled offsets, each f16 result is rounded to
f16 after its step, f16 feeds are widened and f16 outputs narrowed, so kernels
run at float32 speed while callers still feed and get float16.
``f16_storage="native"`` holds them as numpy float16 (several times slower).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ir.symbolic import symbols
from ir.types import DType
from runtime.dims import DimBinder
from runtime.errors import InputError, InvalidOmError
from runtime.f16 import CAST_PLANNERS, F16Layout, round_to_f16, widened
from runtime.kernels import lookup_kernel
from runtime.kernels.movement import concat_in_place
from runtime.kernels.shape import dims_program
from runtime.om import Executable, decode_json_value, dtype_name, np_dtype
from runtime.profile import Profile, StepTiming
from runtime.run_state import HeldState, RunState, _Step

__all__ = ["NodeArg", "Profile", "Session", "StepTiming"]


def _ort_type(name: str) -> str:
    """onnxruntime's ``NodeArg.type`` for an IR dtype name (``"f32"`` -> ``"tensor(float)"``)."""
    try:
        return f"tensor({DType(name).onnx_name})"
    except ValueError:
        return name


@dataclass(frozen=True)
class NodeArg:
    """An input or output as onnxruntime describes it (.name, .shape, .type) plus the IR dtype."""

    name: str
    shape: list[int | str]
    type: str
    dtype: str


class Session:
    """Load an executable (path, bytes or `Executable`) and run it; safe to share between threads."""

    def __init__(self, model: str | os.PathLike | bytes | bytearray | memoryview | Executable, *,
                 f16_storage: str = "emulated") -> None:
        """``f16_storage``: ``"emulated"`` holds f16 activations in float32 containers
        (`runtime.f16`), ``"native"`` as numpy float16; results agree to f16 rounding."""
        if f16_storage not in ("emulated", "native"):
            raise ValueError(f"f16_storage must be 'emulated' or 'native', got {f16_storage!r}")
        self.executable = model if isinstance(model, Executable) else Executable.load(model)
        self._f16_storage = f16_storage
        self.profile: Profile | None = None
        self._profile_lock = threading.Lock()
        self._bind()

    # -- loading ------------------------------------------------------------------
    def _bind(self) -> None:
        prog = self.executable.program
        acts = prog["activations"]
        self._widx = {w: len(acts) + i for i, w in enumerate(self.executable.weights)}
        self.f16 = F16Layout(prog, self.executable.weights, self._f16_storage == "emulated")
        self._layout(acts)
        # the load-time state: its views decide what folds and what is elided, then it is the pool's first
        self._default = state = RunState(self)
        self._replaceable = state.dyn.indices
        self._folded_slots: set[int] = set()
        self.folded_steps: list[str] = []  # names of the steps computed once at load (`_fold`)
        self.elided_steps: list[str] = []  # Concats whose operands sit in their slices, aliased views
        self._templates: list[_Step] = []
        # the shape program's steps (sym.dims): run when a run's symbol values change, not every run
        self._host_templates: list[tuple[_Step, frozenset[str]]] = []
        for k, st in enumerate(prog["steps"]):
            step = self._bind_step(k, st, acts, state.env)
            if step is None:
                continue
            if step.kernel == "sym.dims":
                syms = frozenset(s for d in st["attrs"]["dims"] if isinstance(d, str) for s in symbols(d))
                a = acts[st["outputs"][0]]
                if all(isinstance(d, int) and 0 <= d <= 1 << 16 for d in a["shape"]):
                    step.host_buf = (a["shape"], np_dtype(a["dtype"]))
                self._host_templates.append((step, syms))
            else:
                self._templates.append(step)
        self._inputs = [NodeArg(i["name"], i["shape"], _ort_type(i["dtype"]), i["dtype"])
                        for i in prog["inputs"]]
        self._input_acts = [i["act"] for i in prog["inputs"]]
        self._widened_inputs = [i in self.f16.held for i in self._input_acts]  # fed as f16, held as f32
        self._outputs = [NodeArg(o["name"], o["shape"], _ort_type(o["dtype"]), o["dtype"])
                         for o in prog["outputs"]]
        self._output_slots = [self._slot(o["ref"]) for o in prog["outputs"]]
        self._output_dtypes = [np_dtype(o["dtype"]) for o in prog["outputs"]]
        self._symbolic_inputs = any(not isinstance(d, int) for i in self._inputs for d in i.shape)
        self._input_names = [i.name for i in self._inputs]
        # per input: its spec, numpy dtype and the (axis, size) of its fixed dims
        self._feed_checks = [(i, np_dtype(i.dtype), [(k, d) for k, d in enumerate(i.shape) if isinstance(d, int)])
                             for i in self._inputs]
        self._binder = DimBinder([(i.name, i.shape) for i in self._inputs], self._ranges, prog.get("gears"))
        self._plan_steps()
        state.attach(self)
        # the states no run is using; LIFO, so a single thread keeps running in the same state
        # (list.append and list.pop are atomic: no lock)
        self._pool: list[RunState] = [state]
        self._last = state  # the state of the latest run: `held_past`

    def _plan_steps(self) -> None:
        """Give the kernel's planner to each step whose operands and results keep their
        identity across runs (weights, constants, arena and KV views; not the caller's
        feeds); a state plans it on its first run and again when a view changes."""
        host_outs = {i for st, _ in self._host_templates for i in st.out_idx}
        self._replaceable = dyn = self._replaceable | host_outs
        stable = {i for i, s_ in enumerate(self._static) if s_} | dyn
        stable -= set(self._input_acts)
        for st in self._templates:
            entry = lookup_kernel(st.kernel)
            plan = CAST_PLANNERS.get(st.fn) or (entry.plan if entry is not None and st.fn is entry.fn else None)
            if plan is None:
                continue
            if not all(i < 0 or i in stable for i in st.in_idx) or not all(i in stable for i in st.out_idx):
                continue
            st.plan = plan

    def _layout(self, acts: list[dict[str, Any]]) -> None:
        """The arena's size and slots, and the constants: the weights (read-only views
        into the loaded file), then the results folded at load."""
        weights = self.executable.weights
        arena_bytes = int(self.executable.header.get("memory", {}).get("arena_bytes", 0))
        k, f16 = self.f16.scale, self.f16  # emulated f16: every offset and size doubled (`runtime.f16`)
        self._arena_need = k * max([a["offset"] + a["nbytes"] for a in acts if a["offset"] >= 0] + [arena_bytes, 0])
        self._consts: list[Any] = [None] * (len(acts) + len(weights))
        self._static = [False] * len(self._consts)
        self._arena_slots = []  # (activation, offset, nbytes, dtype, shape) of the planned static ones
        for i, a in enumerate(acts):
            if a["offset"] >= 0 and all(isinstance(d, int) for d in a["shape"]):
                dt = f16.dtype(i, np_dtype(a["dtype"]))
                self._arena_slots.append((i, k * a["offset"], a["nbytes"] * (dt.itemsize // 2 if i in f16.held else 1),
                                          dt, a["shape"]))
                self._static[i] = True
        for w, i in self._widx.items():
            self._consts[i] = widened(weights[w]) if f16.emulate else weights[w]
            self._static[i] = True
        # symbolic shapes: bound per run from the feeds, viewed at their slots planned at the bound
        self._ranges = {k: (int(lo), int(hi)) for k, (lo, hi) in self.executable.program.get("dims", {}).items()}

    def _slot(self, ref: list[Any] | None) -> int:
        """The value-table index of an operand reference (-1: absent)."""
        if ref is None:
            return -1
        return ref[1] if ref[0] == "a" else self._widx[ref[1]]

    def _bind_step(self, k: int, st: dict[str, Any], acts: list[dict[str, Any]], env: list[Any]) -> _Step | None:
        """Step `k` bound to its kernel (a template each state copies and binds to its
        views); None when it was folded at load or is a Concat with nothing to do.
        `env` is the load-time state's value table."""
        weights = self.executable.weights
        attrs = {key: _resolve(v, weights) for key, v in st["attrs"].items()}
        entry = lookup_kernel(st["kernel"])
        if "opset" in st:
            attrs["_opset"] = st["opset"]
        if st["kernel"] == "sym.dims":
            attrs.update(dims_program(attrs))  # parsed once here: a run never writes the shared attrs
        attrs["_n_outputs"] = len(st["outputs"])
        in_idx = [self._slot(r) for r in st["inputs"]]
        in_types = [(None, None) if r is None else
                    (acts[r[1]]["dtype"], acts[r[1]]["shape"]) if r[0] == "a" else
                    (dtype_name(weights[r[1]].dtype), list(weights[r[1]].shape)) for r in st["inputs"]]
        fn = self._kernel_for(st, attrs, in_types)
        fn = self.f16.cast_kernel(st, in_types[0][0] if in_types else None) or fn  # to an emulated f16
        if st["kernel"] == "sym.dims":  # the shape program: re-run on the host when its symbols change
            for i in st["outputs"]:
                self._static[i], env[i] = False, None
        outs = [env[i] if self._static[i] else None for i in st["outputs"]]
        ins = [env[i] if i >= 0 else None for i in in_idx] if all(i < 0 or self._static[i] for i in in_idx) else None
        if self._fold(st, fn, attrs, in_idx, len(acts), acts, env):
            return None
        if entry is not None and entry.view and self._aliases(st, acts):
            self.elided_steps.append(st["name"])  # the plan put its result on its operand's bytes
            return None
        if st["kernel"] == "Concat" and ins is not None and concat_in_place(ins, attrs, outs[0]):
            self.elided_steps.append(st["name"])  # its operands were produced in place
            return None
        cc = st["attrs"].get("cost_cycles")
        dyn = self._replaceable
        rnd = self.f16.rounded(st)
        return _Step(k, st["kernel"], st["engine"], st["name"], fn, attrs, in_idx, list(st["outputs"]), [], [],
                     None, float(cc) if cc is not None else None,
                     [(j, i) for j, i in enumerate(st["outputs"]) if i in dyn],
                     scratch=entry is not None and entry.scratch, rnd=rnd)

    def _aliases(self, st: dict[str, Any], acts: list[dict[str, Any]]) -> bool:
        """A view step whose result slot is its operand's slot (same offset and dtype,
        both planned in the arena, the operand computed in its slot rather than
        folded at load): its result view already is the reinterpretation."""
        src, outs = st["inputs"][0] if st["inputs"] else None, st["outputs"]
        if src is None or src[0] != "a" or len(outs) != 1 or src[1] in self._folded_slots:
            return False
        a, r = acts[src[1]], acts[outs[0]]
        held = self.f16.held
        return (a["offset"] >= 0 and a["offset"] == r["offset"] and a["dtype"] == r["dtype"]
                and (src[1] in held) == (outs[0] in held))

    def _fold(self, st: dict[str, Any], fn: Any, attrs: dict[str, Any], in_idx: list[int], n_act: int,
              acts: list[dict[str, Any]], env: list[Any]) -> bool:
        """Run a step whose operands are all constants once, at load, and bind its results
        as constants (as onnxruntime folds constant subgraphs at session creation).

        The model zoo's light models build their largest weights with ConstantOfShape
        (the compiler keeps those unfolded so the .om stays small); refilling them every
        run cost up to half of the run.  Steps the compiler marked nondeterministic are
        never folded; a step that fails here stays in the program (and reports its error
        when run)."""
        if not in_idx or any(i < 0 for i in in_idx) or any(
                i < n_act and i not in self._folded_slots for i in in_idx):
            return False
        if st.get("nondeterministic"):
            return False
        try:
            res = list(fn([env[i] for i in in_idx], attrs, None))
        except Exception:  # noqa: BLE001 - left to run (and fail) at run time
            return False
        if len(res) < len(st["outputs"]):
            return False
        vals = []
        for j, slot_ in enumerate(st["outputs"]):
            r = np.asarray(res[j])
            a = acts[slot_]
            want = np_dtype(a["dtype"])
            if slot_ in self.f16.held and r.dtype.kind == "f":
                r, want = round_to_f16(r), np.dtype(np.float32)  # its float32 container
            static_shape = all(isinstance(d, int) for d in a["shape"])
            if (static_shape and list(r.shape) != list(a["shape"])) or (r.dtype != want and want != object):
                return False
            if self._arena_need and np.may_share_memory(r, self._default.arena):
                r = r.copy()
            vals.append(r)
        for slot_, r in zip(st["outputs"], vals):
            r.flags.writeable = False  # shared by every run: a kernel must not write into it
            env[slot_] = self._consts[slot_] = r
            self._static[slot_] = True
            self._folded_slots.add(slot_)
        self.folded_steps.append(st["name"])
        return True

    @staticmethod
    def _kernel_for(st: dict[str, Any], attrs: dict[str, Any], in_types: list[tuple[Any, Any]]):
        entry = lookup_kernel(st["kernel"])
        if entry is not None and (entry.accepts is None or entry.accepts(attrs, [t[0] for t in in_types])):
            return entry.fn
        from runtime.kernels.aicpu import make_aicpu_kernel

        try:
            return make_aicpu_kernel(st["kernel"], attrs, st.get("opset"), in_types, len(st["outputs"]))
        except Exception as e:  # noqa: BLE001 - any load failure is reported with the step
            # the loader let the kind through (an ONNX schema exists), but this runtime cannot run
            # the step: the .om names a kernel it has not got (exit 4), not a failure of a run
            raise InvalidOmError(
                f"step {st['name']!r}: no kernel for {st['kernel']!r} (native or onnx.reference): {e}") from None

    # -- introspection ---------------------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_modelmeta(self) -> dict[str, Any]:
        h = self.executable.header
        return {"model": h.get("model"), "soc_version": h.get("soc_version")}

    # -- running ----------------------------------------------------------------------
    def _check_feeds(self, feeds: dict[str, Any]) -> list[np.ndarray]:
        if not isinstance(feeds, dict):
            raise InputError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
        names = self._input_names
        if len(feeds) != len(names) or not all(n in feeds for n in names):
            self._feed_names_error(feeds)
        arrays = []
        for spec, want, fixed in self._feed_checks:
            a = feeds[spec.name]
            if not isinstance(a, np.ndarray):
                a = np.asarray(a)
            if a.dtype != want and not (want == object and a.dtype.kind in "OUS"):
                raise InputError(f"input {spec.name!r}: expected dtype {spec.dtype} ({want}), "
                                 f"received {a.dtype} with shape {list(a.shape)}")
            shape = a.shape
            if len(shape) != len(spec.shape) or not all(shape[k] == d for k, d in fixed):
                raise InputError(f"input {spec.name!r}: expected shape {_fmt(spec.shape, spec.dtype)}, "
                                 f"received {_fmt(list(a.shape), spec.dtype)}")
            arrays.append(a)
        return arrays

    def _feed_names_error(self, feeds: dict[str, Any]) -> None:
        names = self._input_names
        unknown = [k for k in feeds if k not in names]
        if unknown:
            raise InputError(f"unknown input name(s) {', '.join(map(repr, unknown))}; "
                             f"the model's inputs are {', '.join(map(repr, names))}")
        missing = [n for n in names if n not in feeds]
        if missing:
            raise InputError(f"missing input(s) {', '.join(map(repr, missing))}; the model's inputs are "
                             + ", ".join(f"{i.name!r} ({_fmt(i.shape, i.dtype)})" for i in self._inputs))

    def _picks(self, output_names: list[str] | None) -> list[int]:
        """Indices of the requested outputs (all when None)."""
        if output_names is None:
            return list(range(len(self._outputs)))
        by_name = {o.name: i for i, o in enumerate(self._outputs)}
        bad = [n for n in output_names if n not in by_name]
        if bad:
            raise InputError(f"unknown output name(s) {', '.join(map(repr, bad))}; the model's outputs are "
                             + ", ".join(repr(o.name) for o in self._outputs))
        return [by_name[n] for n in output_names]

    def run(self, output_names: list[str] | None, feeds: dict[str, Any], *, profile: bool = False,
            copy: bool = True, state: HeldState | None = None) -> list[np.ndarray]:
        """Run the program; returns copies of the requested outputs (all when None).

        Runs in a state from the session's pool (a new one when every state is busy
        in another thread), so threads may share a Session.  ``copy=False`` returns
        the outputs as they sit in that state's memory, valid until the state's next
        run: a KV cache's ``present`` is then a view of the cache buffer, and feeding
        it back as the next ``past`` costs no copy (the generator's decode loop, which
        holds one state, `hold`).  A compressed cache's present is read back from the
        stored cache, a fresh array, only when asked for (carry it with `held_past`).
        With threads, that state's next run may be another thread's: hold a state
        (`hold`) to keep ``copy=False`` outputs.  ``state``: run in a state the caller
        holds instead of one from the pool."""
        if state is not None:
            return self._run_in(state.state, output_names, feeds, profile, copy)
        pool = self._pool
        rs = self._take()
        try:
            return self._run_in(rs, output_names, feeds, profile, copy)
        finally:
            self._last = rs
            pool.append(rs)

    def run_all(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        """A debug run keeping every step's results (and those of steps folded at load):
        ``{activation name: copy}``, copied as each step ends since the arena reuses
        bytes; emulated f16 values come back as float32 (exactly f16).  `atcpy-compare`."""
        names = [a["name"] for a in self.executable.program["activations"]]
        kept: dict[str, np.ndarray] = {}
        state = self._take()
        env = state.env

        def keep(st: _Step) -> None:
            kept.update((names[i], np.array(env[i])) for i in st.out_idx if isinstance(env[i], np.ndarray))

        try:
            self._run_in(state, [], feeds, False, True, keep)
            kept.update((names[i], np.array(env[i])) for i in self._folded_slots
                        if names[i] not in kept and isinstance(env[i], np.ndarray))
        finally:
            self._pool.append(state)
        return kept

    @contextmanager
    def hold(self) -> Iterator[HeldState]:
        """A state kept for a series of runs, e.g. one generation: its KV caches carry
        over, its ``copy=False`` outputs stay valid until its next run and no other
        thread runs in it meanwhile.

            with sess.hold() as h:
                logits, present = h.run(None, feeds, copy=False)
                past = h.held_past("past_key_values.0.key")
        """
        state = self._take()
        try:
            yield HeldState(self, state)
        finally:
            self._pool.append(state)

    def _take(self) -> RunState:
        """A state no run is using: the pool's latest, or a new one."""
        try:
            return self._pool.pop()
        except IndexError:
            return RunState(self).attach(self)

    def _run_in(self, state: RunState, output_names: list[str] | None, feeds: dict[str, Any], profile: bool,
                copy: bool, keep: Any = None) -> list[np.ndarray]:
        arrays = self._check_feeds(feeds)
        picks = self._picks(output_names)
        env = state.env
        if self._symbolic_inputs:
            state.bind_symbols(self._binder.bind(arrays))
        for a, i, widen in zip(arrays, self._input_acts, self._widened_inputs):
            env[i] = a.astype(np.float32) if widen else a
        timings: list[StepTiming] | None = [] if profile else None
        try:
            state.execute(timings, keep)
            return [self._output(state, i, copy) for i in picks]
        finally:
            for i in self._input_acts:
                env[i] = None  # do not keep the caller's arrays alive
            if timings is not None:
                with self._profile_lock:
                    if self.profile is None:
                        self.profile = Profile()
                    self.profile.runs += 1
                    self.profile.steps.extend(timings)

    def _output(self, state: RunState, i: int, copy: bool) -> np.ndarray:
        v = state.env[self._output_slots[i]]
        dt = self._output_dtypes[i]
        if v is None:  # a compressed KV cache's present: read back (a fresh array) only when asked for
            return state.kv.read(self._output_slots[i], state.env, dt)
        if copy:
            return np.array(v, dtype=dt if dt != object else v.dtype, copy=True)
        return v if v.dtype == dt or dt == object else v.astype(dt)  # an emulated f16: narrowed, a new array

    def held_past(self, name: str, drop: int = 0) -> np.ndarray:
        """For past input `name` of a compressed KV cache (`held_pasts`): the past standing for
        what the cache holds after the latest run, less its `drop` oldest positions.  Fed back,
        the run writes only the new positions; its values are not the cache's (read the
        present output for those).  See `runtime.kv_cache`.  With threads, the latest run
        may be another thread's: carry a cache in a held state (`hold`) instead."""
        return self._last.held_past(name, drop)

    @property
    def held_pasts(self) -> frozenset[str]:
        """The past inputs of compressed KV caches: carried from run to run with `held_past`."""
        return self._default.kv.held

    # -- the load-time state (the one a single thread runs in) ---------------------------
    @property
    def kv_buffers(self) -> dict[int, np.ndarray]:
        """Activation -> its KV cache buffer (and an i8 cache's scales), of the load-time state."""
        return self._default.kv.buffers

    @property
    def arena(self) -> np.ndarray:
        return self._default.arena

    @property
    def _steps(self) -> list[_Step]:
        return self._default.steps

    @property
    def _scratch(self) -> Any:
        return self._default.scratch


def _resolve(v: Any, weights: dict[str, np.ndarray]) -> Any:
    """An attribute value with its ``{"$weight": name}`` references replaced by the weights."""
    if isinstance(v, dict) and len(v) == 1 and "$weight" in v:
        return weights[v["$weight"]]
    if isinstance(v, dict) and len(v) == 1 and "$float" in v:  # a non-finite float (strict JSON)
        return decode_json_value(v)
    if isinstance(v, list):
        return [_resolve(x, weights) for x in v]
    return v


def _fmt(shape: list[Any], dtype: str) -> str:
    return "tensor<" + "".join(f"{d}x" for d in shape) + dtype + ">"
