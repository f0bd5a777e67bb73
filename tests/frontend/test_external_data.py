"""External data is mapped, not read (`compiler.frontend.external_data`): the arrays
view the file, equal what onnx reads, and a location outside the model's
directory or bytes past the file's end are errors that name the tensor."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.llama7b import SEVEN_B, write_decoder
from compiler.frontend import import_onnx
from compiler.frontend.external_data import has_external_data, map_external
from ir.errors import UnsupportedModelError
from passes._meta import is_mapped_or_placeholder

SMALL = replace(SEVEN_B, layers=2, hidden=64, heads=4, intermediate=160, vocab=128, dtype="float32")


def test_weights_are_views_of_the_file_with_the_values_onnx_reads(tmp_path) -> None:
    path = write_decoder(tmp_path / "d.onnx", SMALL, fill="random")
    g = import_onnx(path)
    weights = {op.result.name: op.attrs["value"] for op in g.ops if op.kind == "const" and "weight" in op.result.name}
    assert len(weights) == 2 * 9 + 3  # 9 a layer, the embedding, the final norm, the LM head
    full = onnx.load(str(path))  # loads the external data (reads it)
    for t in full.graph.initializer:
        if t.name in weights:
            a = weights[t.name]
            assert is_mapped_or_placeholder(a) and not a.flags.writeable, t.name
            np.testing.assert_array_equal(a, numpy_helper.to_array(t))


def _model(tmp_path: Path, location: str, length: int = 64, file_bytes: int = 64) -> Path:
    (tmp_path / "w.bin").write_bytes(b"\0" * file_bytes)
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert has_external_data(m)
    path = tmp_path / "m.onnx"
    onnx.save_model(m, path)
    return path


def test_a_good_location_maps(tmp_path) -> None:
    g = import_onnx(_model(tmp_path, "w.bin"))
    (w,) = [op.attrs["value"] for op in g.ops if op.kind == "const"]
    assert w.shape == (4, 4) and is_mapped_or_placeholder(w)


@pytest.mark.parametrize("location", ["../w.bin", "/etc/passwd", "missing.bin"])
def test_locations_outside_the_model_directory_or_missing_are_refused(tmp_path, location) -> None:
    with pytest.raises(UnsupportedModelError, match="tensor 'w'"):
        import_onnx(_model(tmp_path, location))


@pytest.mark.parametrize(("length", "file_bytes"), [(64, 32), (48, 64)])
def test_bytes_past_the_file_or_a_wrong_length_are_refused(tmp_path, length, file_bytes) -> None:
    with pytest.raises(UnsupportedModelError, match=r"tensor 'w' \[4, 4\] float32 needs 64 bytes"):
        import_onnx(_model(tmp_path, "w.bin", length, file_bytes))


def test_inline_tensors_are_not_mapped() -> None:
    assert map_external(numpy_helper.from_array(np.ones(3, np.float32), "c")) is None
