"""float16 values held in float32 containers: how the NumPy runtime runs fp16 programs fast.

numpy's float16 is scalar: an f16 ufunc converts, computes and converts back at
about 5 ns an element and an f16<->f32 cast costs 1.6-2.5 ns, against 0.05-0.1 ns
for float32 arithmetic, so a ``force_fp16`` program ran 2-5x slower than the
float32 compile of the same model.  The SoC stores f16; only the way this
runtime *holds* an f16 value changes (`Session(..., f16_storage="emulated")`, the
default when a program has f16 activations):

- an f16 activation is a float32 array whose every value is exactly a float16
  value.  The arena is twice the plan's bytes and every planned offset and size is
  doubled (`F16Layout`): a linear map keeps the plan's non-overlap and its
  in-place / view / concat aliasing for every dtype, an f16 slot becomes an f32
  view of the same element count, other dtypes keep theirs at the doubled offset;
- after each step whose IR result is f16, its f32 result is rounded to the nearest
  float16 value (`round_to_f16`, float32 arithmetic, equal to
  ``x.astype(np.float16).astype(np.float32)``), except for steps that only select
  or move their operands' values (`EXACT_KERNELS`: their results are f16 values
  already);
- a Cast to f16 rounds as it copies (`cast_to_held`), or only copies when its
  operand is known to hold f16 values (`exact_acts`: ``force_fp16`` moves data in
  f32 between a Cast from f16 and a Cast back);
- f16 weights are widened once at load, f16 feeds when fed, f16 outputs narrowed
  when returned: a caller still feeds and gets float16.

Kernels then see float32 and run at float32 speed.  The Cube's semantics (f16
operands, f32 accumulation, one f16 rounding of the result) hold exactly; a
Vector op computes in f32 and rounds once, which for + - * / sqrt equals the
correctly rounded f16 operation (24 >= 2 * 11 + 2 bits: double rounding is
innocuous); a fused formula (GELU, SiLU, softmax) skips the f16 roundings of its
intermediates, as the native runtime's f32 kernels and onnxruntime's CPU fp16
kernels do.  A kernel that returns float64 for an f16 result is rounded to f32
on its way into the view and then to f16 (a double rounding the native runtime's
direct cast does not make).  KV caches keep true float16 storage
(`native_acts`): a decode step's present is then a view of the cache that is fed
back as the next past without a conversion of the whole cache.

    r = Rounder(); x = np.float32([1/3, 70000.0, 1e-7]); r(x)   # x == [0.33325195, inf, 1.1920929e-07]
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

__all__ = ["CAST_PLANNERS", "EXACT_KERNELS", "F16Layout", "Rounder", "cast_to_held", "copy_to_held", "exact_acts",
           "native_acts", "round_to_f16", "widened"]

# Kernels whose f16 results are f16 operands' values selected, moved or negated: nothing to round.
EXACT_KERNELS = frozenset({
    "Relu", "MaxPool", "GlobalMaxPool", "Max", "Min", "Neg", "Abs", "Identity", "Reshape", "Flatten",
    "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND",
    "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "ReduceMax", "ReduceMin", "TopK", "Floor", "Ceil",
    "Where", "kv.append",
})

_EXP = np.int32(0x7F800000)  # the exponent field of a float32
_LO = np.int32(113 << 23)  # exponent field of 2**-14, f16's smallest normal: below it the f16 step is 2**-24
_HI = np.int32(143 << 23)  # exponent field of 2**16: larger values only need to become inf
_SHIFT = np.int32(13 << 23)  # 2**13: f32 keeps 24 bits, f16 11
_F16_LIMIT = np.float32(65520.0)  # f16's largest value plus half its step: rounds to inf
_UP, _DOWN = np.float32(2.0 ** 112), np.float32(2.0 ** -112)  # 2**16 * 2**112 overflows f32
_ABS, _SIGN = np.int32(0x7FFFFFFF), np.int32(-0x80000000)
_SMALL = 1536  # below this many elements numpy's own cast is faster (8 us of fixed cost against 4 ns an element)
_CHUNK = 1 << 16  # elements per block: the block and its two work buffers stay in L2
_LO_ARR = np.full(_CHUNK, _LO, np.int32)  # read-only operands of the clamps (see `_round_block`)
_HI_ARR = np.full(_CHUNK, _HI, np.int32)
_LO_ARR.flags.writeable = _HI_ARR.flags.writeable = False


class Rounder:
    """`round_to_f16` in place with reusable work buffers (one per run state: not thread-safe)."""

    def __init__(self) -> None:
        self._e = np.empty(_CHUNK, np.int32)
        self._a = np.empty(_CHUNK, np.float32)

    def __call__(self, x: np.ndarray, src: np.ndarray | None = None) -> None:
        """Round the float32 array `x` in place to the nearest float16 values; with
        `src` (float32, x's shape), write `src` rounded into `x` (a Cast to f16 in one go)."""
        n = x.size
        if n == 0:
            return
        if src is None:
            src = x
        if n <= _SMALL:  # numpy's scalar cast costs less than the block's dozen ufunc calls here
            with np.errstate(over="ignore"):
                np.copyto(x, src.astype(np.float16))
            return
        if not (x.flags.c_contiguous and src.flags.c_contiguous):  # rare (a strided view): via a copy
            y = np.array(src, dtype=np.float32, order="C")
            self(y)
            x[...] = y
            return
        flat, sflat = x.reshape(-1), src.reshape(-1)
        e, a = self._e, self._a
        if n <= _CHUNK:
            _round_block(flat, sflat, e[:n], a[:n], _LO_ARR[:n], _HI_ARR[:n])
            return
        for s in range(0, n, _CHUNK):
            blk = flat[s: s + _CHUNK]
            m = blk.size
            _round_block(blk, sflat[s: s + _CHUNK], e[:m], a[:m], _LO_ARR[:m], _HI_ARR[:m])


def _round_block(x: np.ndarray, src: np.ndarray, e: np.ndarray, a: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray) -> None:
    """Write `src` (float32) rounded to float16 values into `x` (may be `src`),
    round-to-nearest-even.

    For |v| in [2**E, 2**(E+1)) the f16 step is 2**(E-10) (2**-24 below 2**-14):
    adding c = 2**(max(E, -14) + 13) to |v| puts the sum in c's binade, whose f32
    step is exactly that, so the f32 addition rounds |v| to it (ties to even, as c
    is an even multiple of the step) and subtracting c again is exact.  When no
    value has its sign bit set (a ReLU's result; -0.0 has it) v is |v|; otherwise
    the sign bit goes back with an integer OR (so -0.0 and negative values rounding
    to 0 stay negative).  Values reaching 2**16 overflow to inf when scaled by
    2**112 and back; that and the upper clamp of c (which keeps c finite for huge,
    inf and NaN inputs) run only when a value is outside (-65520, 65520) or NaN.

    Every step is a plain float32/int32 ufunc: numpy 2.4 runs ``maximum`` against
    an array operand 3x faster than against a scalar, and ``copysign`` at 0.55 ns
    an element against 0.06 for the two bitwise ops used instead."""
    b, ai = src.view(np.int32), a.view(np.int32)
    unsigned = b.min() >= 0
    if unsigned:
        finite = bool(src.max() < _F16_LIMIT)  # NaN: unordered, False
    else:
        np.bitwise_and(b, _ABS, out=ai)  # |v|
        finite = bool(a.max() < _F16_LIMIT)
    np.bitwise_and(b, _EXP, out=e)
    np.maximum(e, lo, out=e)
    if not finite:
        np.minimum(e, hi, out=e)
    e += _SHIFT
    c = e.view(np.float32)
    if unsigned and finite:
        np.add(src, c, out=x)
        x -= c
        return
    if unsigned:  # and a NaN or a value past f16's range: |v| is v
        np.copyto(a, src)
    if finite:
        a += c
        a -= c
    else:
        with np.errstate(invalid="ignore"):  # inf - inf where v is inf: NaN, put right below
            a += c
            a -= c
    np.bitwise_and(b, _SIGN, out=e)
    np.bitwise_or(ai, e, out=x.view(np.int32))
    if not finite:
        with np.errstate(over="ignore"):
            x *= _UP
        x *= _DOWN


def round_to_f16(x: np.ndarray) -> np.ndarray:
    """`x` (float32) rounded to the nearest float16 values, as a new float32 array;
    equal bit for bit to ``x.astype(np.float16).astype(np.float32)`` (NaN stays NaN
    with its sign; its payload is not narrowed)."""
    r = np.array(x, dtype=np.float32, copy=True)
    Rounder()(r)
    return r


def widened(w: np.ndarray) -> np.ndarray:
    """A weight as emulation holds it: float16 widened to float32 once, at load."""
    if w.dtype != np.float16:
        return w
    r = w.astype(np.float32)
    r.flags.writeable = False
    return r


def cast_to_held(inputs: list[Any], attrs: dict[str, Any], out: Any) -> list[np.ndarray]:
    """The kernel of a Cast from f32 to a held f16: the value rounded into its float32
    container (the state's `Rounder`, ``attrs["_rounder"]``, reads the source and
    writes the view), as the cast would, without numpy's scalar float16 conversion."""
    x, o = inputs[0], out[0] if out else None
    r = attrs.get("_rounder")
    if r is None or o is None or o.shape != x.shape or x.dtype != np.float32:
        res = round_to_f16(np.asarray(x, dtype=np.float32))
        if o is None or o.shape != res.shape:
            return [res]
        np.copyto(o, res)
        return [o]
    r(o, src=x)
    return [o]


def copy_to_held(inputs: list[Any], attrs: dict[str, Any], out: Any) -> list[np.ndarray]:
    """The kernel of a Cast to a held f16 of values that are f16 values already
    (`exact_acts`): a copy into the float32 container."""
    x, o = inputs[0], out[0] if out else None
    if o is not None and o.shape == x.shape:
        np.copyto(o, x, casting="unsafe")
        return [o]
    return [np.array(x, dtype=np.float32)]


def _plan_cast(inputs: list[Any], attrs: dict[str, Any], out: list[Any]) -> Any:
    """`cast_to_held` planned: one rounding pass from the operand into the view."""
    x, o, r = inputs[0], out[0], attrs.get("_rounder")
    if r is None or not isinstance(x, np.ndarray) or x.dtype != np.float32 or o is None or o.shape != x.shape:
        return None
    return partial(r, o, x)


def _plan_copy(inputs: list[Any], attrs: dict[str, Any], out: list[Any]) -> Any:
    """`copy_to_held` planned: the copy with its arguments bound."""
    x, o = inputs[0], out[0]
    if not isinstance(x, np.ndarray) or o is None or o.shape != x.shape:
        return None
    return partial(np.copyto, o, x, casting="unsafe")


# the planners of the Cast kernels above (`runtime.kernels.planner`'s contract)
CAST_PLANNERS = {cast_to_held: _plan_cast, copy_to_held: _plan_copy}


def native_acts(program: Mapping[str, Any]) -> set[int]:
    """Activations that keep true float16 storage under emulation: the KV caches
    (buffers that live across runs, whose present is fed back as the next past
    without a copy) and the pasts fed to ``kv.append``."""
    out: set[int] = set()
    for e in program.get("kv_cache", []):
        out.update(i for i in (e.get("act"), e.get("scale"), e.get("present_act")) if isinstance(i, int))
    for st in program["steps"]:
        if st["kernel"] == "kv.append":
            out.update(st["outputs"])
            src = st["inputs"][0] if st["inputs"] else None
            if src is not None and src[0] == "a":
                out.add(src[1])
    return out


class F16Layout:
    """Where each activation lives under emulation: offsets and sizes doubled, f16
    held as f32 except the `native` ones.  ``scale == 1`` is the plan as written."""

    def __init__(self, program: Mapping[str, Any], weights: Mapping[str, np.ndarray], emulate: bool) -> None:
        acts = program["activations"]
        self.emulate = emulate = emulate and any(a["dtype"] == "f16" for a in acts)
        self.scale = 2 if emulate else 1
        self.native = frozenset(native_acts(program)) if emulate else frozenset()
        # activations held in f32 containers (their IR dtype is f16)
        self.held = frozenset(i for i, a in enumerate(acts)
                              if emulate and a["dtype"] == "f16" and i not in self.native)
        self.exact = exact_acts(program, weights) if emulate else frozenset()

    def dtype(self, i: int, np_dtype: np.dtype) -> np.dtype:
        """The dtype activation `i` is held in (`np_dtype`: its IR dtype's)."""
        return np.dtype(np.float32) if i in self.held else np_dtype

    def rounded(self, step: Mapping[str, Any]) -> tuple[int, ...]:
        """The results of `step` to round after it: its held ones, unless the step
        only selects or moves f16 values (`EXACT_KERNELS`) or is a Cast (which
        rounds as it writes: `cast_kernel`, or numpy's own cast to float16)."""
        if step["kernel"] in EXACT_KERNELS or step["kernel"] == "Cast":
            return ()
        return tuple(j for j, i in enumerate(step["outputs"]) if i in self.held)

    def cast_kernel(self, step: Mapping[str, Any], src_dtype: str | None) -> Any:
        """The kernel for a Cast to a held f16 from f32 or f16 (None: keep the
        registered one): a copy when the values are f16 values already (a Cast back
        to f16 after f32 data movement), else one rounding pass from source to view."""
        ins = step["inputs"]
        if step["kernel"] != "Cast" or step["outputs"][0] not in self.held or src_dtype not in ("f16", "f32"):
            return None
        exact = src_dtype == "f16" or (ins[0][0] == "a" and ins[0][1] in self.exact)
        return copy_to_held if exact else cast_to_held


def exact_acts(program: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> frozenset[int]:
    """The activations whose values are float16 values whatever the feeds: the f16
    ones, and float results of Casts and `EXACT_KERNELS` whose float operands are
    all such values (or weights that are).  ``force_fp16`` keeps data movement in
    f32 between Casts (ShuffleNet's channel shuffle: f16 -> Cast f32 -> Reshape,
    Transpose, Slice -> Cast f16); the Cast back then has nothing to round."""
    acts = program["activations"]
    exact = {i for i, a in enumerate(acts) if a["dtype"] == "f16"}

    def is_exact(ref: Any) -> bool:
        if ref[0] == "a":
            return ref[1] in exact or not acts[ref[1]]["dtype"].startswith(("f", "bf"))
        w = weights[ref[1]]
        return w.dtype.kind != "f" or w.dtype == np.float16 or (
            w.size <= 1 << 16 and bool(np.array_equal(w, w.astype(np.float16), equal_nan=True)))

    for st in program["steps"]:
        kind, ins = st["kernel"], [r for r in st["inputs"] if r is not None]
        if kind == "Cast":
            ok = bool(ins) and ins[0][0] == "a" and ins[0][1] in exact
        else:
            ok = kind in EXACT_KERNELS and all(is_exact(r) for r in ins)
        if ok:
            exact.update(i for i in st["outputs"] if acts[i]["dtype"] in ("f16", "f32", "f64"))
    return frozenset(exact)
