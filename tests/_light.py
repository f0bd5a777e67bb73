"""The onnx package's model-zoo light models for tests, compiled once per session.

The light models are the slowest things the suite compiles and runs, and several
test files need the same compile (the shipped model for Ascend310P3, say).
Everything here is memoized for the life of the pytest process, keyed by what
determines it:

- `light_model(name, weights, logits=...)`: the ModelProto — the shipped file,
  or `with_random_weights` of it, optionally with the last Softmax's input as
  an extra output (`with_logits_output`);
- `light_compile(name, weights, logits=..., soc_version=..., **options)`: one
  `compile_model` per (model, weights, logits, SoC, options);
- `light_reference(name, weights, logits=...)`: onnxruntime's outputs on
  `light_input`, one InferenceSession per model variant.

Whichever test asks first pays; later callers get the same objects, so treat
them as read-only (build a `Session` from an executable, never edit it).
`COMPILES` counts the compiles per key (1 unless an entry was `release`d and
asked for again).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = [
    "COMPILES", "LIGHT_DIR", "LIGHT_MODELS", "WEIGHTS", "light_compile", "light_expected", "light_input",
    "light_model", "light_path", "light_reference", "ort_threads", "release", "with_logits_output",
    "with_random_weights",
]

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))
WEIGHTS = ("shipped", "random")


def light_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


def light_input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The input ONNX's backend test runner feeds these models (arange / n)."""
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in i.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds[i.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


def light_expected(name: str) -> np.ndarray:
    t = onnx.TensorProto()
    t.ParseFromString((LIGHT_DIR / f"light_{name}_output_0.pb").read_bytes())
    return numpy_helper.to_array(t)


def ort_threads() -> int:
    return int(os.environ.get("ATCPY_TEST_THREADS", "2"))


def _lecun(rng: np.random.Generator, shape: tuple[int, ...], chunk: int = 1 << 22) -> np.ndarray:
    """float32 ``rng.standard_normal(shape) * sqrt(1 / fan_in)``, the same values,
    drawn a chunk at a time (vgg19's fc6 alone would be an 822 MB float64 draw)."""
    scale = np.sqrt(1.0 / int(np.prod(shape[1:])))
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    for i in range(0, flat.size, chunk):
        n = min(chunk, flat.size - i)
        flat[i:i + n] = rng.standard_normal(n) * scale
    return out


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The light models build every weight with ConstantOfShape (one value per
    tensor), which makes their outputs a uniform softmax over logits of ~1e10: a
    poor numeric check, and out of fp16's range.  This copy replaces each such
    weight with seeded LeCun-scaled values (1-D tensors — BatchNorm and bias
    parameters — in [0.5, 1.5)), keeping the graph exactly as it is (the shape
    initializers only those ConstantOfShapes read are dropped)."""
    rng = np.random.default_rng(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    keep, new_inits, shapes = [], [], set()
    for node in m.graph.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            shape = tuple(int(d) for d in inits[node.input[0]])
            if len(shape) >= 2:
                arr = _lecun(rng, shape)
            else:
                arr = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            new_inits.append(numpy_helper.from_array(arr, node.output[0]))
            shapes.add(node.input[0])
        else:
            keep.append(node)
    used = {i for n in keep for i in n.input} | {o.name for o in m.graph.output}
    unused = [t for t in m.graph.initializer if t.name in shapes and t.name not in used]
    for t in unused:
        m.graph.initializer.remove(t)
    unused_names = {t.name for t in unused}
    for i in [i for i in m.graph.input if i.name in unused_names]:
        m.graph.input.remove(i)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.initializer.extend(new_inits)
    return m


def with_logits_output(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy whose last Softmax's input is also a graph output (None: no Softmax)."""
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    if not softmax:
        return None
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(softmax[-1].input[0]))
    return m


# --- the session-wide memo ----------------------------------------------------------------
_CACHE: dict[tuple, Any] = {}
COMPILES: Counter = Counter()


def _memo(key: tuple, make: Callable[[], Any]) -> Any:
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def release(name: str, weights: str) -> None:
    """Forget everything cached for `name` with `weights` (models, compiles,
    references).  For a test module that is the only user of big entries (the
    random-weight vgg19 holds 1.4 GB) and is done with them; asking again later
    compiles again (and `COMPILES` shows it)."""
    for key in [k for k in _CACHE if k[1:3] == (name, weights)]:
        del _CACHE[key]


def _check(name: str, weights: str) -> None:
    if name not in LIGHT_MODELS:
        raise ValueError(f"no light model {name!r}; there are {', '.join(LIGHT_MODELS)}")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")


def light_model(name: str, weights: str = "shipped", *, logits: bool = False) -> onnx.ModelProto | None:
    """The light model `name` with its `weights` ("shipped" or "random"); with
    `logits`, the copy that also outputs the last Softmax's input (None when the
    model has no Softmax)."""
    _check(name, weights)

    def make() -> onnx.ModelProto | None:
        if logits:
            return with_logits_output(light_model(name, weights))
        m = onnx.load(light_path(name))
        return m if weights == "shipped" else with_random_weights(m)

    return _memo(("model", name, weights, logits), make)


def light_compile(name: str, weights: str = "shipped", *, logits: bool = False,
                  soc_version: str = "Ascend310P3", **options: Any):
    """`compile_model` of `light_model(name, weights, logits=logits)`, once per key."""
    key = ("compile", name, weights, logits, soc_version, tuple(sorted(options.items())))

    def make():
        from compiler import compile_model

        model = light_model(name, weights, logits=logits)
        if model is None:
            raise ValueError(f"{name} has no Softmax: there is no logits variant")
        COMPILES[key] += 1
        return compile_model(model, soc_version=soc_version, **options)

    return _memo(key, make)


def light_reference(name: str, weights: str = "shipped", *, logits: bool = False) -> list[np.ndarray]:
    """onnxruntime's outputs for `light_model(name, weights, logits=logits)` on
    `light_input` (the logits, when asked for, are the last output)."""

    def make() -> list[np.ndarray]:
        import onnxruntime as ort

        model = light_model(name, weights, logits=logits)
        if model is None:
            raise ValueError(f"{name} has no Softmax: there is no logits variant")
        so = ort.SessionOptions()
        so.intra_op_num_threads = ort_threads()
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run(None, light_input(model))

    return _memo(("onnxruntime", name, weights, logits), make)
