"""``atcpy --mode=1 --onnx``: the compiled program as an ONNX graph for Netron
(`compiler.om_to_onnx`): valid for the ONNX checker, one node per step, annotated."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler import compile_model
from compiler.cli import main
from compiler.om_to_onnx import ATCPY_DOMAIN, annotations, om_to_onnx
from runtime.om import Executable, load_executable

CUSTOM = ("fused.", "quant.", "kv.", "sym.")


@pytest.fixture(scope="module")
def oms(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example CNN in float and INT8, and a tiny LLaMA decoder with dynamic dims (its KV cache
    in float and in int8), as .om files."""
    from tests.llm.decoders import export_decoder

    d = tmp_path_factory.mktemp("om_to_onnx")
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    np.savez(d / "calib.npz", input=x)
    exes = {
        "cnn": compile_model(str(model), soc_version="Ascend310P3"),
        "int8": compile_model(str(model), soc_version="Ascend310P3", precision_mode="allow_quantize",
                              calibration_data=str(d / "calib.npz"), extra={"progress": False}),
    }
    decoder = str(export_decoder("llama", d / "dec"))
    dims = "batch_size:1~1;sequence_length:1~16;past_sequence_length:0~15"
    exes["llama"] = compile_model(decoder, soc_version="Ascend310P3", dim_range=dims)
    # an int8 KV cache: the float present is kv.append's result 0 but no step's output in the .om
    exes["llama_kv8"] = compile_model(decoder, soc_version="Ascend310P3", dim_range=dims, kv_cache_dtype="int8")
    paths = {}
    for name, exe in exes.items():
        paths[name] = exe.save(d / f"{name}.om")
    return paths


def _export(om: Path, out: Path, *flags: str) -> onnx.ModelProto:
    assert main(["--mode=1", f"--om={om}", f"--onnx={out}", *flags]) == 0
    onnx.checker.check_model(str(out), full_check=True)  # by path: external data resolves beside it
    return onnx.load(str(out))


@pytest.mark.parametrize("name", ["cnn", "int8", "llama", "llama_kv8"])
def test_one_annotated_node_per_step_and_the_checker_passes(oms, name, tmp_path, capsys) -> None:
    om = oms[name]
    exe = load_executable(om)
    m = _export(om, om.with_suffix(".compiled.onnx"))
    steps = exe.program["steps"]
    assert "atcpy run success" in capsys.readouterr().out
    assert [n.op_type for n in m.graph.node] == [s["kernel"] for s in steps]
    for node, step in zip(m.graph.node, steps, strict=True):
        ann = annotations(node)
        assert ann["engine"] == step["engine"] and ann["name"] == step["name"]
        assert "estimate_ms" in ann and "arena_nbytes" in ann
        acts = [exe.program["activations"][a] for a in step["outputs"]]
        assert ann["arena_offset"] == ",".join(str(a["offset"]) for a in acts)
        if step["kernel"].startswith(CUSTOM):
            assert node.domain == ATCPY_DOMAIN
            attrs = {a.name for a in node.attribute}
            assert {"engine", "arena_offset", "estimate_ms", "name"} <= attrs
        origins = step["attrs"].get("_origins") or [step["name"]]
        assert ann["origins"] == ",".join(origins)
        if "tile" in step["attrs"]:
            assert ann["tile_plan"].startswith("tile=")
    domains = {o.domain for o in m.opset_import}
    assert ("atcpy" in domains) == any(n.domain == ATCPY_DOMAIN for n in m.graph.node)
    weight_names = set(exe.weights)
    assert [i.name for i in m.graph.input] == [i["name"] for i in exe.program["inputs"]]
    assert [o.name for o in m.graph.output] == [o["name"] for o in exe.program["outputs"]]
    typed = {v.name for v in m.graph.value_info} | {v.name for v in m.graph.output}
    produced = {o for n in m.graph.node for o in n.output}
    assert produced <= typed and not produced & weight_names


def test_kinds_domains_and_dynamic_dims(oms, tmp_path) -> None:
    kinds = {name: _export(oms[name], tmp_path / f"{name}.onnx", "--onnx_weights=embed") for name in oms}
    assert {n.op_type for n in kinds["cnn"].graph.node} >= {"fused.conv", "MaxPool"}
    assert sum(n.op_type.startswith("quant.") for n in kinds["int8"].graph.node) >= 3
    llama = kinds["llama"]
    assert {"kv.append", "fused.attention", "sym.dims"} <= {n.op_type for n in llama.graph.node}
    assert next(n for n in llama.graph.node if n.op_type == "Gather").domain == ""  # a plain ONNX op stays ONNX
    ids = next(i for i in llama.graph.input if i.name == "input_ids")
    assert [d.dim_param for d in ids.type.tensor_type.shape.dim] == ["batch_size", "sequence_length"]


@pytest.mark.parametrize("mode", ["om", "embed", "shape"])
def test_weights_read_from_the_om_embedded_or_shape_only(oms, mode) -> None:
    om = oms["cnn"]
    exe = load_executable(om)
    m = _export(om, om.with_name(f"cnn.{mode}.onnx"), f"--onnx_weights={mode}")
    size = om.with_name(f"cnn.{mode}.onnx").stat().st_size
    if mode == "shape":
        inputs = {i.name: i for i in m.graph.input}
        assert not m.graph.initializer and set(exe.weights) <= set(inputs)
        w = inputs["conv2.weight"].type.tensor_type.shape.dim
        assert [d.dim_value for d in w] == list(exe.weights["conv2.weight"].shape)
        return
    got = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}  # onnx.load read external data
    assert set(got) == set(exe.weights)
    for k, w in exe.weights.items():
        np.testing.assert_array_equal(got[k], w)
    weights_bytes = sum(w.nbytes for w in exe.weights.values())
    assert (size > weights_bytes) == (mode == "embed")


def test_om_weights_fall_back_to_shapes_when_the_om_is_elsewhere(oms, tmp_path, capsys) -> None:
    m = _export(oms["cnn"], tmp_path / "sub" / "cnn.onnx")
    assert "wrote the weights' shapes only" in capsys.readouterr().err
    assert not m.graph.initializer and {i.name for i in m.graph.input} >= {"conv2.weight"}


def test_onnx_together_with_json(oms, tmp_path) -> None:
    om = oms["cnn"]
    assert main(["--mode=1", f"--om={om}", f"--json={tmp_path / 'x.json'}", f"--onnx={tmp_path / 'x.onnx'}",
                 "--onnx_weights=shape"]) == 0
    assert (tmp_path / "x.json").stat().st_size > 0 and (tmp_path / "x.onnx").stat().st_size > 0


def test_cli_errors(oms, tmp_path, capsys) -> None:
    om = oms["cnn"]
    assert main(["--mode=1", f"--om={om}", f"--onnx={tmp_path}"]) == 2  # a directory
    assert main(["--mode=1", f"--om={om}"]) == 2  # neither --json nor --onnx
    not_om = tmp_path / "x.txt"
    not_om.write_text("hello")
    assert main(["--mode=1", f"--om={not_om}", f"--onnx={tmp_path / 'y.onnx'}"]) == 4
    errs = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errs) == 3 and all(e.startswith("atcpy: error: ") for e in errs)
    assert not (tmp_path / "y.onnx").exists()


def test_outputs_that_name_a_value_twice_get_an_identity(oms) -> None:
    """Two outputs of one value, and a weight as an output: ONNX names outputs by value, so
    each extra name is an Identity marked as no step (the only nodes that are not steps)."""
    exe = load_executable(oms["cnn"])
    header = copy.deepcopy(exe.header)
    prog = header["program"]
    first = prog["outputs"][0]
    prog["outputs"] += [{**first, "name": "again"},
                        {"name": "bias", "dtype": "f32", "shape": [10], "ref": ["w", "fc2.bias"]}]
    m, used = om_to_onnx(Executable(header, dict(exe.weights)), weights="embed")
    onnx.checker.check_model(m, full_check=True)
    extra = m.graph.node[len(prog["steps"]):]
    assert [(n.op_type, list(n.input), list(n.output)) for n in extra] == [
        ("Identity", [first["name"]], ["again"]), ("Identity", ["fc2.bias"], ["bias"])]
    assert all(annotations(n)["step"] == "none" for n in extra) and used == "embed"


def test_an_onnx_kernel_onnx_would_reject_goes_to_the_atcpy_domain(oms) -> None:
    """Attributes are not the only check: a Softmax step with an operand ONNX's Softmax does not
    take (as a rewrite might leave one) is no valid ONNX node, so it is an ``atcpy`` node."""
    exe = load_executable(oms["cnn"])
    header = copy.deepcopy(exe.header)
    step = next(s for s in header["program"]["steps"] if s["kernel"] == "Softmax")
    step["inputs"].append(step["inputs"][0])
    m, _ = om_to_onnx(Executable(header, dict(exe.weights)))
    onnx.checker.check_model(m, full_check=True)
    assert next(n for n in m.graph.node if n.op_type == "Softmax").domain == ATCPY_DOMAIN
    assert next(n for n in m.graph.node if n.op_type == "MaxPool").domain == ""
