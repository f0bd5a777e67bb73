"""`Session`: run an `.om` executable, shaped like onnxruntime's InferenceSession.

    sess = Session("out/mlp.om")
    [y] = sess.run(None, {"x": x})
    sess.run(None, {"x": x}, profile=True); print(sess.profile.table())

At load time the session allocates ONE arena (a numpy uint8 buffer of the
plan's size), creates a typed view for every planned activation at its offset,
and binds each step's operand list once: weights are read-only zero-copy views
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
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ir.symbolic import symbols
from ir.types import DType
from runtime.dims import DimBinder, DynamicViews
from runtime.errors import InputError, RuntimeFailure
from runtime.kernels import lookup_kernel
from runtime.kernels.matmul import Scratch
from runtime.kernels.movement import concat_in_place
from runtime.kv_cache import KvCaches
from runtime.om import Executable, decode_json_value, dtype_name, np_dtype
from runtime.profile import Profile, StepTiming

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


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class Session:
    """Load an executable (path, bytes or `Executable`) and run it."""

    def __init__(self, model: str | os.PathLike | bytes | bytearray | memoryview | Executable) -> None:
        self.executable = model if isinstance(model, Executable) else Executable.load(model)
        self.profile: Profile | None = None
        self._bind()

    # -- loading ------------------------------------------------------------------
    def _bind(self) -> None:
        prog = self.executable.program
        acts = prog["activations"]
        self._widx = {w: len(acts) + i for i, w in enumerate(self.executable.weights)}
        self._alloc(acts)
        # one set of work buffers (im2col columns, padded inputs, partial products) shared by
        # the Cube steps: sized by the first run, reused by every later one
        self._scratch = Scratch()
        self._folded_slots: set[int] = set()
        self.folded_steps: list[str] = []  # names of the steps computed once at load (`_fold`)
        self.elided_steps: list[str] = []  # Concats whose operands sit in their slices, aliased views
        self._steps: list[_Step] = []
        # the shape program's steps (sym.dims): run when a run's symbol values change, not every run
        self._host_steps: list[tuple[_Step, frozenset[str]]] = []
        for k, st in enumerate(prog["steps"]):
            step = self._bind_step(k, st, acts)
            if step is None:
                continue
            if step.kernel == "sym.dims":
                syms = frozenset(s for d in st["attrs"]["dims"] if isinstance(d, str) for s in symbols(d))
                a = acts[st["outputs"][0]]
                if all(isinstance(d, int) and 0 <= d <= 1 << 16 for d in a["shape"]):
                    step.outs = [np.zeros(a["shape"], np_dtype(a["dtype"]))]  # rewritten in place per binding
                self._host_steps.append((step, syms))
            else:
                self._steps.append(step)
        self._last_dims: dict[str, int] | None = None
        self._inputs = [NodeArg(i["name"], i["shape"], _ort_type(i["dtype"]), i["dtype"])
                        for i in prog["inputs"]]
        self._input_acts = [i["act"] for i in prog["inputs"]]
        self._outputs = [NodeArg(o["name"], o["shape"], _ort_type(o["dtype"]), o["dtype"])
                         for o in prog["outputs"]]
        self._output_slots = [self._slot(o["ref"]) for o in prog["outputs"]]
        self._output_dtypes = [np_dtype(o["dtype"]) for o in prog["outputs"]]
        self._symbolic_inputs = any(not isinstance(d, int) for i in self._inputs for d in i.shape)
        self._input_specs = [(i.name, i.shape) for i in self._inputs]
        self._input_names = [i.name for i in self._inputs]
        # per input: its spec, numpy dtype and the (axis, size) of its fixed dims
        self._feed_checks = [(i, np_dtype(i.dtype), [(k, d) for k, d in enumerate(i.shape) if isinstance(d, int)])
                             for i in self._inputs]
        self._binder = DimBinder(self._input_specs, self._ranges, prog.get("gears"))
        self._writers: dict[int, list[tuple[_Step, int]]] = {}  # symbolic activation -> (step, result)
        for st in self._steps:
            for j, i in st.dyn_outs:
                self._writers.setdefault(i, []).append((st, j))
        self._plan_steps()

    def _plan_steps(self) -> None:
        """Give the kernel's planner to each step whose operands and results keep their
        identity across runs (weights, constants, arena and KV views; not the caller's
        feeds), and note which planned steps touch each view a new binding replaces."""
        host_outs = {i for st, _ in self._host_steps for i in st.out_idx}
        dyn = self._dyn.indices | host_outs
        feeds = set(self._input_acts)
        stable = {i for i, s_ in enumerate(self._static) if s_} | dyn
        stable -= feeds
        self._planned_by: dict[int, list[_Step]] = {}  # a replaceable view -> the planned steps reading/writing it
        for st in self._steps:
            entry = lookup_kernel(st.kernel)
            if entry is None or entry.plan is None or st.fn is not entry.fn:
                continue
            if not all(i < 0 or i in stable for i in st.in_idx) or not all(i in stable for i in st.out_idx):
                continue
            st.plan = entry.plan
            for i in {*st.in_idx, *st.out_idx} & dyn:
                self._planned_by.setdefault(i, []).append(st)

    def _alloc(self, acts: list[dict[str, Any]]) -> None:
        """The arena and the value table: a view into the arena for each planned
        activation, then the weights (read-only views into the loaded file)."""
        weights = self.executable.weights
        arena_bytes = int(self.executable.header.get("memory", {}).get("arena_bytes", 0))
        need = max([a["offset"] + a["nbytes"] for a in acts if a["offset"] >= 0] + [arena_bytes, 0])
        # 64-byte aligned base so every planned offset keeps its alignment
        raw = np.zeros(need + 64, dtype=np.uint8)
        base = (-_ptr(raw)) % 64
        self.arena = raw[base: base + need]
        self._raw = raw
        env: list[Any] = [None] * (len(acts) + len(weights))
        self._static = [False] * len(env)
        for i, a in enumerate(acts):
            if a["offset"] >= 0 and all(isinstance(d, int) for d in a["shape"]):
                dt = np_dtype(a["dtype"])
                env[i] = self.arena[a["offset"]: a["offset"] + a["nbytes"]].view(dt).reshape(a["shape"])
                self._static[i] = True
        for w, i in self._widx.items():
            env[i] = weights[w]
            self._static[i] = True
        self._env = env
        # symbolic shapes: bound per run from the feeds, viewed at their slots planned at the bound
        self._ranges = {k: (int(lo), int(hi)) for k, (lo, hi) in self.executable.program.get("dims", {}).items()}
        self._kv = KvCaches(self.executable.program.get("kv_cache", []), acts, np_dtype)
        self.kv_buffers = self._kv.buffers  # activation -> its KV cache buffer (and an i8 cache's scales)
        self._dyn = DynamicViews(acts, self.arena, np_dtype, self.kv_buffers)
        self._dims: dict[str, int] = {}  # this run's symbol values, read by the shape program's steps

    def _slot(self, ref: list[Any] | None) -> int:
        """The value-table index of an operand reference (-1: absent)."""
        if ref is None:
            return -1
        return ref[1] if ref[0] == "a" else self._widx[ref[1]]

    def _bind_step(self, k: int, st: dict[str, Any], acts: list[dict[str, Any]]) -> _Step | None:
        """Step `k` bound to its kernel and views; None when it was folded at load or
        is a Concat with nothing to do."""
        env = self._env
        weights = self.executable.weights
        attrs = {key: _resolve(v, weights) for key, v in st["attrs"].items()}
        entry = lookup_kernel(st["kernel"])
        if entry is not None and entry.scratch:
            attrs["_scratch"] = self._scratch
        if "opset" in st:
            attrs["_opset"] = st["opset"]
        if st["kernel"] == "sym.dims":
            attrs["_dims"] = self._dims
        if st["kernel"] == "kv.append":  # a compressed cache's held past points into this buffer
            attrs["_held"] = self._kv.sentinel
        attrs["_n_outputs"] = len(st["outputs"])
        in_idx = [self._slot(r) for r in st["inputs"]]
        in_types = [(None, None) if r is None else
                    (acts[r[1]]["dtype"], acts[r[1]]["shape"]) if r[0] == "a" else
                    (dtype_name(weights[r[1]].dtype), list(weights[r[1]].shape)) for r in st["inputs"]]
        fn = self._kernel_for(st, attrs, in_types)
        if st["kernel"] == "sym.dims":  # the shape program: re-run on the host when its symbols change
            for i in st["outputs"]:
                self._static[i], env[i] = False, None
        outs = [env[i] if self._static[i] else None for i in st["outputs"]]
        ins = [env[i] if i >= 0 else None for i in in_idx] if all(i < 0 or self._static[i] for i in in_idx) else None
        if self._fold(st, fn, attrs, in_idx, len(acts), acts):
            return None
        if entry is not None and entry.view and self._aliases(st, acts):
            self.elided_steps.append(st["name"])  # the plan put its result on its operand's bytes
            return None
        if st["kernel"] == "Concat" and ins is not None and concat_in_place(ins, attrs, outs[0]):
            self.elided_steps.append(st["name"])  # its operands were produced in place
            return None
        cc = st["attrs"].get("cost_cycles")
        dyn = self._dyn.indices
        return _Step(k, st["kernel"], st["engine"], st["name"], fn, attrs, in_idx, list(st["outputs"]), outs,
                     [_ptr(o) if o is not None else 0 for o in outs], ins, float(cc) if cc is not None else None,
                     [(j, i) for j, i in enumerate(st["outputs"]) if i in dyn])

    def _aliases(self, st: dict[str, Any], acts: list[dict[str, Any]]) -> bool:
        """A view step whose result slot is its operand's slot (same offset and dtype,
        both planned in the arena, the operand computed in its slot rather than
        folded at load): its result view already is the reinterpretation."""
        src, outs = st["inputs"][0] if st["inputs"] else None, st["outputs"]
        if src is None or src[0] != "a" or len(outs) != 1 or src[1] in self._folded_slots:
            return False
        a, r = acts[src[1]], acts[outs[0]]
        return a["offset"] >= 0 and a["offset"] == r["offset"] and a["dtype"] == r["dtype"]

    def _fold(self, st: dict[str, Any], fn: Any, attrs: dict[str, Any], in_idx: list[int], n_act: int,
              acts: list[dict[str, Any]]) -> bool:
        """Run a step whose operands are all constants once, at load, and bind its results
        as constants (as onnxruntime folds constant subgraphs at session creation).

        The model zoo's light models build their largest weights with ConstantOfShape
        (the compiler keeps those unfolded so the .om stays small); refilling them every
        run cost up to half of the run.  Steps the compiler marked nondeterministic are
        never folded; a step that fails here stays in the program (and reports its error
        when run)."""
        env = self._env
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
            static_shape = all(isinstance(d, int) for d in a["shape"])
            if (static_shape and list(r.shape) != list(a["shape"])) or (r.dtype != want and want != object):
                return False
            if self.arena.size and np.may_share_memory(r, self.arena):
                r = r.copy()
            vals.append(r)
        for slot_, r in zip(st["outputs"], vals):
            r.flags.writeable = False  # shared by every run: a kernel must not write into it
            env[slot_] = r
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
            raise RuntimeFailure(
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
            copy: bool = True) -> list[np.ndarray]:
        """Run the program; returns copies of the requested outputs (all when None).

        ``copy=False`` returns the outputs as they sit in the session's memory,
        valid until the next run: a KV cache's ``present`` is then a view of the
        cache buffer, and feeding it back as the next ``past`` costs no copy (the
        generator's decode loop).  A compressed cache's present is read back from the
        stored cache, a fresh array, only when asked for (carry it with `held_past`)."""
        arrays = self._check_feeds(feeds)
        picks = self._picks(output_names)
        env = self._env
        if self._symbolic_inputs:
            self._bind_symbols(arrays)
        for a, i in zip(arrays, self._input_acts):
            env[i] = a
        prof = None
        if profile:
            if self.profile is None:
                self.profile = Profile()
            prof = self.profile
            prof.runs += 1
            t_base = time.perf_counter()
        try:
            for st in self._steps:
                if prof is not None:
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
                if prof is not None:
                    t1 = time.perf_counter()
                    prof.steps.append(StepTiming(st.index, st.kernel, st.engine, st.name, t1 - t0, t0 - t_base,
                                                 st.cost_cycles))
        except (RuntimeFailure, MemoryError):
            raise
        except Exception as e:
            raise RuntimeFailure(f"step {st.index} ({st.kernel} {st.name!r}) failed: {type(e).__name__}: {e}") from e
        results = []
        for i in picks:
            v = env[self._output_slots[i]]
            dt = self._output_dtypes[i]
            if v is None:  # a compressed KV cache's present: read back (a fresh array) only when asked for
                results.append(self._kv.read(self._output_slots[i], env, dt))
                continue
            results.append(np.array(v, dtype=dt if dt != object else v.dtype, copy=True) if copy else v)
        for i in self._input_acts:
            env[i] = None  # do not keep the caller's arrays alive
        return results

    def held_past(self, name: str, drop: int = 0) -> np.ndarray:
        """For past input `name` of a compressed KV cache (`held_pasts`): the past standing for
        what the cache holds after the last run, less its `drop` oldest positions.  Fed back,
        the run writes only the new positions; its values are not the cache's (read the
        present output for those).  See `runtime.kv_cache`."""
        return self._kv.held_past(name, self._env, drop)

    @property
    def held_pasts(self) -> frozenset[str]:
        """The past inputs of compressed KV caches: carried from run to run with `held_past`."""
        return self._kv.held

    def _bind_symbols(self, arrays: list[np.ndarray]) -> None:
        """Bind the symbols from the feeds' shapes and point every symbolic
        activation whose shape changed (and the steps writing it) at its new view."""
        dims = self._binder.bind(arrays)
        last = self._last_dims
        if dims == last:
            return
        self._dims.clear()
        self._dims.update(dims)
        env = self._env
        writers, planned = self._writers, self._planned_by
        for i, v, ptr in self._dyn.changed(dims):
            env[i] = v
            for st, j in writers.get(i, ()):
                st.outs[j] = v
                st.out_ptrs[j] = ptr
            for st in planned.get(i, ()):
                st.thunk = None
        for st, syms in self._host_steps:
            if last is None or any(dims.get(s) != last.get(s) for s in syms):
                try:
                    res = st.fn([], st.attrs, st.outs)  # into its own small buffer when the shape fits
                except Exception as e:
                    raise RuntimeFailure(f"step {st.index} ({st.kernel} {st.name!r}) failed: "
                                         f"{type(e).__name__}: {e}") from e
                i = st.out_idx[0]
                if res[0] is not env[i]:  # a new array: the steps planned on the old one plan again
                    env[i] = res[0]
                    for p_st in self._planned_by.get(i, ()):
                        p_st.thunk = None
        self._last_dims = dims

    def _store(self, st: _Step, res: Any) -> None:
        """Put step `st`'s results in place: copied into their arena views unless the
        kernel wrote there itself, kept as they are for values without a slot."""
        env, arena = self._env, self.arena
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
