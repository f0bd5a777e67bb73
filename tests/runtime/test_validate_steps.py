"""The loader checks each step against its op declaration and the arena plan as a whole
(`runtime.validate_steps`, `runtime.validate_arena`): every crafted `.om` here passed the
field checks of `runtime.validate` and used to fail only when a step ran (exit 1) or, for
the last few, ran and returned wrong numbers.  Each must now be `InvalidOmError` at load
naming the step and field, and exit 4 at `atcpy-run` with one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench.fuzz_om import _mlp
from runtime.cli import main as run_main
from runtime.errors import InvalidOmError
from runtime.om import Executable
from runtime.session import Session
from tests.runtime.test_om_fuzz import ROOT, _pool_net, _tiny_cnn, edit


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {"tiny_cnn": _tiny_cnn(), "pool_net": _pool_net(), "mlp": _mlp()}


def _step(h: dict, kernel: str) -> dict:
    return next(s for s in h["program"]["steps"] if s["kernel"] == kernel)


def _set(path: tuple, value) -> Callable[[dict, dict], None]:
    """An edit setting ``header["program"][path...] = value``."""
    def f(h, i):
        node = h["program"]
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return f


def _del(path: tuple) -> Callable[[dict, dict], None]:
    def f(h, i):
        node = h["program"]
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]
    return f


def _extra_weight(h: dict, i: dict) -> None:
    """A Gemm whose weight's rows are not the activation's columns: [2, 8] x [4, 32] (the
    weight's own bytes reshaped, so the index stays a valid layout)."""
    assert i["w"]["nbytes"] == 4 * 32 * 4
    i["w"]["shape"] = [4, 32]
    st = h["program"]["steps"][0]
    st["kernel"], st["inputs"][1] = "Gemm", ["w", "w"]


def _weights_overlap(h: dict, i: dict) -> None:
    """The second weight of the data section moved onto the first (aligned, in bounds)."""
    first, second = sorted((e for e in i.values() if e.get("nbytes")), key=lambda e: e["offset"])[:2]
    second["offset"] = first["offset"]


def _weight_unaligned(h: dict, i: dict) -> None:
    e = max((e for e in i.values() if e.get("nbytes")), key=lambda e: e["offset"])
    e["offset"] -= 1


def _overwrite_live(h: dict, i: dict) -> None:
    """Greater writes its mask over `sl` ([0, 64)), which the next step (Where) still reads."""
    h["program"]["activations"][4]["offset"] = 0


# (model, edit, words the message must hold); the first four are issue 17's examples
CASES = {
    "conv pads": ("tiny_cnn", _set(("steps", 1, "attrs", "pads", 2), 2), ["step 1 (fused.conv", "outputs[0]"]),
    "pool rewired": ("pool_net", _set(("steps", 2, "inputs", 0, 1), 0), ["step 2 (MaxPool", "outputs[0]"]),
    "pool pads deleted": ("pool_net", _del(("steps", 2, "attrs", "pads")), ["step 2 (MaxPool", "tensor<Nx4x3x3xf32>"]),
    "unknown kernel": ("tiny_cnn", _set(("steps", 4, "kernel"), ""), ["step 4", ".kernel", "no runtime kernel"]),
    "perm not a permutation": ("pool_net", _set(("steps", 4, "attrs", "perm"), [0, 1, 2, 2]), ["step 4 (Transpose", "not a permutation"]),
    "perm out of range": ("pool_net", _set(("steps", 4, "attrs", "perm", 2), 1000003), ["type inference"]),
    "concat off-axis dims": ("pool_net", _set(("steps", 3, "inputs", 1, 1), 1), ["step 3 (Concat", "does not concatenate"]),
    "reduce keepdims deleted": ("pool_net", _del(("steps", 5, "attrs", "keepdims")), ["step 5 (ReduceMean"]),
    "conv weight rank": ("tiny_cnn", lambda h, i: i["conv1.weight_bn"]["shape"].insert(1, 1),
                         ["step 0 (fused.conv", "type inference"]),
    "conv bias": ("pool_net", lambda h, i: h["program"]["steps"][0]["inputs"].append(["a", 0]),
                  ["step 0 (Conv", "a bias"]),
    "gemm inner dims": ("mlp", _extra_weight, ["step 0 (Gemm", "inner dimensions"]),
    "gather constant indices": ("pool_net", _set(("steps", 6, "inputs", 1), ["w", "shape"]), ["step 6 (Gather", "[-1, 64]"]),
    "slice float steps": ("mlp", lambda h, i: h["program"]["steps"][2]["inputs"].append(["a", 0]), ["inputs[4]"]),
    "unknown act": ("tiny_cnn", _set(("steps", 0, "attrs", "act"), "x"), ["attrs.act", "not a fused activation"]),
    "undeclared act": ("tiny_cnn", _set(("steps", 5, "attrs", "act"), "relu"), ["fused.matmul_add has no attribute"]),
    "null axis": ("mlp", _set(("steps", 1, "attrs", "axis"), None), ["step 1 (Softmax", "attrs.axis", "null"]),
    "input shape": ("tiny_cnn", _set(("inputs", 0, "shape", 3), 7), ["program.inputs[0].shape"]),
    "input in the arena": ("mlp", _set(("activations", 0, "offset"), 0), ["program.inputs[0].act"]),
    "output shape": ("tiny_cnn", _set(("outputs", 0, "shape", 1), 11), ["program.outputs[0].shape"]),
    "output name twice": ("mlp", lambda h, i: h["program"]["outputs"].append(
        {**h["program"]["outputs"][0], "ref": ["a", 3]}), ["program.outputs[1].name", "names two values"]),
    "arena overlap": ("pool_net", _set(("activations", 2, "offset"), 1), ["activation 2.offset", "overlaps"]),
    "in place over a live value": ("mlp", _overwrite_live, ["activation 4.offset", "reads later"]),
    "weights overlap": ("tiny_cnn", _weights_overlap, ["overlap in the data section"]),
    "weight offset unaligned": ("tiny_cnn", _weight_unaligned, ["is not 64-byte aligned"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_step_is_rejected_at_load(models, case):
    model, fn, words = CASES[case]
    with pytest.raises(InvalidOmError) as e:
        Executable.load(edit(models[model], fn))
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("case", ["conv pads", "pool rewired", "pool pads deleted", "unknown kernel", "arena overlap",
                                  "input shape"])
def test_atcpy_run_exits_4_with_one_line(models, case, tmp_path, capsys):
    model, fn, _ = CASES[case]
    inputs = {"tiny_cnn": np.load(ROOT / "examples" / "tiny_cnn_input.npy"),
              "pool_net": np.ones((2, 3, 8, 8), np.float32), "mlp": np.ones((2, 8), np.float32)}
    om, x = tmp_path / "bad.om", tmp_path / "x.npy"
    om.write_bytes(edit(models[model], fn))
    np.save(x, inputs[model])
    assert run_main([f"--model={om}", f"--input={x}", f"--output={tmp_path / 'out'}"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid .om program" in err[0], err


def test_unmutated_models_still_load_and_every_kind_is_checked(models):
    """The check accepts what the compiler writes (a symbolic batch, a Reshape to ``2*N``)."""
    for blob in models.values():
        Executable.load(blob)
    exe = Executable.load(models["pool_net"])
    assert any("2*N" in map(str, a["shape"]) for a in exe.program["activations"])


def test_example_om_files_load(tmp_path):
    for om in sorted(Path(ROOT / "examples").glob("*.om")):
        Executable.load(om)


def test_an_onnx_op_the_runtime_cannot_build_is_rejected_when_the_session_loads(models, tmp_path):
    """``Loop`` has an ONNX schema, so the loader lets the name through; building its kernel
    (no ``body``) fails as the Session binds the step: still exit 4, not a run's failure."""
    bad = edit(models["tiny_cnn"], _set(("steps", 6, "kernel"), "Loop"))
    with pytest.raises(InvalidOmError, match="no kernel for 'Loop'"):
        Session(bad)
    om, x = tmp_path / "bad.om", tmp_path / "x.npy"
    om.write_bytes(bad)
    np.save(x, np.load(ROOT / "examples" / "tiny_cnn_input.npy"))
    assert run_main([f"--model={om}", f"--input={x}"]) == 4


def test_one_value_listed_twice_as_an_output_is_a_valid_program(models):
    """ONNX lets a graph list an output twice and the compiler writes it so: accepted, both equal."""
    blob = edit(models["mlp"], lambda h, i: h["program"]["outputs"].append(dict(h["program"]["outputs"][0])))
    a, b = Session(blob).run(None, {"x": np.ones((2, 8), np.float32)})
    np.testing.assert_array_equal(a, b)
