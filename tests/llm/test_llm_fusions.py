"""fuse-llm (issue 15): RMSNorm, LayerNorm, rotary embedding, the SiLU-gated MLP and
GELU as one Vector op each.

- the kernels against NumPy float64 formulas and onnxruntime's own Gelu and
  LayerNormalization;
- every positive case of ``tests/passes/fuse-llm/*.ir`` computes the same before and
  after the pass (both run through the runtime);
- the three optimum decoders: the report counts each fusion per layer, the steps
  carry the fused kernels, and the outputs still match onnxruntime.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler import compile_model
from ir import parse
from passes import PassContext
from passes.manager import PassManager
from runtime import Session
from runtime.kernels import lookup_kernel
from tests.conftest import split_cases
from tests.llm.decoders import KINDS, LAYERS, decoder_feeds
from tests.passes._eval import run_graph

DIMS = "sequence_length:1~64;past_sequence_length:0~63;batch_size:1~2"
IR_DIR = Path(__file__).parents[1] / "passes" / "fuse-llm"
FUSED = {"rms_norm": "fused.rms_norm", "rotary": "fused.rotary", "gated_mlp": "fused.swiglu",
         "layer_norm": "LayerNormalization", "gelu": "Gelu", "causal_mask": "fused.causal_mask"}
EXPECTED = {  # the causal mask is built once and shared by the layers (cse)
    "llama": {"rms_norm": 2 * LAYERS + 1, "rotary": 2 * LAYERS, "gated_mlp": LAYERS, "causal_mask": 1},
    "qwen2": {"rms_norm": 2 * LAYERS + 1, "rotary": 2 * LAYERS, "gated_mlp": LAYERS, "causal_mask": 1},
    "gpt2": {"layer_norm": 2 * LAYERS + 1, "gelu": LAYERS, "causal_mask": 1},
}


def _run(name: str, inputs: list, attrs: dict | None = None, out: list | None = None) -> np.ndarray:
    return lookup_kernel(name).fn(inputs, dict(attrs or {}), out)[0]


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _one_node(op: str, inputs: dict[str, np.ndarray], opset: int, **attrs) -> onnx.ModelProto:
    vi = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inputs.items()]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node(op, list(inputs), ["y"], **attrs)], "g", vi, [out])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


# -- kernels -----------------------------------------------------------------------------------
def test_rms_norm_kernel_matches_float64_and_writes_the_view():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 5, 64)) * 3).astype(np.float32)
    w = rng.standard_normal(64).astype(np.float32)
    xd = x.astype(np.float64)
    want = xd / np.sqrt(np.mean(xd * xd, axis=-1, keepdims=True) + 1e-6) * w
    view = np.empty_like(x)
    got = _run("fused.rms_norm", [x, w], {"epsilon": 1e-6}, [view])
    assert got is view and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_run("fused.rms_norm", [x], {"epsilon": 1e-6}), want / w, rtol=1e-5, atol=1e-5)
    h = _run("fused.rms_norm", [x.astype(np.float16), w.astype(np.float16)], {"epsilon": 1e-6})
    assert h.dtype == np.float16  # reduced in fp32: 300^2 * 64 would overflow fp16
    big = np.full((1, 64), 300, np.float16)
    assert np.all(np.isfinite(_run("fused.rms_norm", [big], {"epsilon": 1e-6})))


def _rotate(x: np.ndarray, interleaved: bool) -> np.ndarray:
    if interleaved:
        r = np.empty_like(x)
        r[..., 0::2], r[..., 1::2] = -x[..., 1::2], x[..., 0::2]
        return r
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_kernel_is_x_cos_plus_rotate_x_sin(interleaved):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 7, 16)).astype(np.float32)
    ang = rng.uniform(0, 6.3, (2, 1, 7, 16))
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    want = x * cos.astype(np.float64) + _rotate(x, bool(interleaved)) * sin.astype(np.float64)
    view = np.empty_like(x)
    got = _run("fused.rotary", [x, cos, sin], {"interleaved": interleaved}, [view])
    assert got is view
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # a rotation keeps each pair's norm when cos/sin are of the same angle per pair
    if interleaved:
        a = np.repeat(ang[..., 0::2], 2, axis=-1)
    else:
        a = np.concatenate([ang[..., :8], ang[..., :8]], axis=-1)
    y = _run("fused.rotary", [x, np.cos(a).astype(np.float32), np.sin(a).astype(np.float32)],
             {"interleaved": interleaved})
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_swiglu_kernel_is_silu_times_up_without_overflow_warnings():
    rng = np.random.default_rng(2)
    g = (rng.standard_normal((3, 128)) * 4).astype(np.float32)
    g[0, :4] = [-1000, -90, 90, 1000]
    u = rng.standard_normal((3, 128)).astype(np.float32)
    gd = g.astype(np.float64)
    want = gd / (1 + np.exp(-np.clip(gd, -700, None))) * u
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = _run("fused.swiglu", [g.astype(np.float16), u.astype(np.float16)])
        got = _run("fused.swiglu", [g, u], {}, [g])  # in place over the gate, as assign-buffers may plan it
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert h.dtype == np.float16
    np.testing.assert_allclose(h, want, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_kernel_matches_onnxruntime(approximate):
    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-10, 10, 4000), rng.standard_normal(4000) * 3]).astype(np.float32)
    x = x.reshape(8, -1)
    want = _ort(_one_node("Gelu", {"x": x}, 20, approximate=approximate), {"x": x})[0]
    view = np.empty_like(x)
    got = _run("Gelu", [x], {"approximate": approximate}, [view])
    assert got is view and got.dtype == np.float32
    # the erf form's stated bound: |error| <= 5e-7 * max(1, |x|)
    assert np.all(np.abs(got - want) <= 5e-7 * np.maximum(1, np.abs(x)) + 1e-7)


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_kernel_matches_onnxruntime(bias):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 6, 32)) * 2 + 1).astype(np.float32)
    feeds = {"x": x, "g": rng.standard_normal(32).astype(np.float32)}
    if bias:
        feeds["b"] = rng.standard_normal(32).astype(np.float32)
    want = _ort(_one_node("LayerNormalization", feeds, 17, axis=-1, epsilon=1e-5), feeds)[0]
    view = np.empty_like(x)
    got, mean, inv = lookup_kernel("LayerNormalization").fn(list(feeds.values()), {"axis": -1, "epsilon": 1e-5},
                                                             [view, None, None])
    assert got is view
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean[..., 0], x.mean(-1), rtol=1e-6, atol=1e-6)
    assert inv.shape == (2, 6, 1)


# -- the IR-text cases keep their meaning -------------------------------------------------------
def _cases() -> list:
    out = []
    for f in sorted(IR_DIR.glob("*.ir")):
        for start, body in split_cases(f.read_text()):
            name = re.search(r"graph @(\w+)", body).group(1)
            out.append(pytest.param(body, id=f"{f.stem}-{name}"))
    return out


@pytest.mark.parametrize("body", _cases())
def test_ir_cases_compute_the_same_after_fuse_llm(body):
    text = re.sub(r'"\w+"(?=x)', "3", body)  # symbolic dims: 3
    before = parse(text, synthesize=True)
    after = parse(text, synthesize=True)
    PassManager.parse("fuse-llm", verify_each=True).run(after, PassContext())
    rng = np.random.default_rng(5)
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in before.inputs}
    for b, a in zip(run_graph(before, feeds), run_graph(after, feeds)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


# -- the decoders ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled(decoder):
    cache: dict = {}

    def get(kind: str):
        if kind not in cache:
            cache[kind] = compile_model(decoder(kind), dim_range=DIMS)
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_fusion_counts_and_steps(kind, compiled):
    exe = compiled(kind)
    fusion = exe.header["report"]["fusion"]
    steps = [s["kernel"] for s in exe.program["steps"]]
    for key, n in EXPECTED[kind].items():
        assert fusion.get(key) == n, f"{kind}: {key} {fusion}"
        assert steps.count(FUSED[key]) == n, f"{kind}: {FUSED[key]} steps"
    if kind == "gpt2":
        assert "Tanh" not in steps and "Pow" not in steps
    else:
        assert not {"Pow", "Sqrt", "ReduceMean", "Sigmoid", "Neg"} & set(steps), f"{kind}: {sorted(set(steps))}"
    # the mask's index arithmetic is gone with it
    assert not {"LessOrEqual", "And", "Where", "Flatten"} & set(steps), f"{kind}: {sorted(set(steps))}"
    if kind != "gpt2":  # q, k, v and gate, up read one activation each: 5 MatMuls become 2 per layer
        assert fusion.get("sibling_matmuls") == 5 * LAYERS, fusion
    fused = [s for s in exe.program["steps"] if s["kernel"] in FUSED.values()]
    assert all(s["engine"] == "vector" for s in fused)


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_outputs_still_match_onnxruntime(kind, decoder, compiled, ort_session):
    path = decoder(kind)
    sess, ref = Session(compiled(kind)), ort_session(path)
    for seq, past in [(8, 0), (1, 8)]:
        feeds = decoder_feeds(path, 1, seq, past, 0)
        for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=f"{kind} at {(seq, past)}")
