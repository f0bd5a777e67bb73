"""The .om format: round trip, determinism, atomic save, validation of bad files, JSON/summary views."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from codegen import build_executable, lower
from ir import DType, Graph, TensorType
from runtime.errors import OmFormatError
from runtime.om import FORMAT_VERSION, MAGIC, Executable
from runtime.session import Session


def model() -> Graph:
    g = Graph("m")
    x = g.add_input("x", TensorType(DType.f32, (1, 3, 6, 6)))
    w = g.const(np.random.RandomState(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = g.const(np.arange(4, dtype=np.float32), "b")
    y = g.add_op("fused.conv", [x, w, b], {"pads": [1, 1, 1, 1], "act": "relu", "engine": "cube",
                                           "tile": [16, 16, 16]}).result
    z = g.add_op("LeakyRelu", [y], {"alpha": 0.1}).result
    q = g.add_op("Flatten", [z]).result
    g.outputs = [g.add_op("ReduceMean", [q], {"axes": [1], "keepdims": 0}).result]
    return g


def test_lower_shapes_steps_and_trivial_plan():
    p = lower(model())
    assert [s["kernel"] for s in p.steps] == ["fused.conv", "LeakyRelu", "Flatten", "ReduceMean"]
    assert p.steps[0]["engine"] == "cube" and p.steps[1]["engine"] == "vector"
    assert p.steps[0]["inputs"] == [["a", 0], ["w", "w"], ["w", "b"]]
    assert set(p.weights) == {"w", "b"}
    placed = [a for a in p.activations if a["offset"] >= 0]
    assert len(placed) == 4 and all(a["offset"] % 32 == 0 for a in placed)
    spans = sorted((a["offset"], a["offset"] + a["nbytes"]) for a in placed)
    assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(spans))  # no overlap without a planner
    assert p.activations[0]["offset"] == -1  # graph input: bound per run


def test_round_trip_runs_the_same(tmp_path):
    exe = build_executable(model(), soc_version="Ascend310P3")
    path = exe.save(tmp_path / "m.om")
    loaded = Executable.load(path)
    assert loaded.header == json.loads(json.dumps(exe.header))
    for k, v in exe.weights.items():
        np.testing.assert_array_equal(loaded.weights[k], v)
        assert not loaded.weights[k].flags.writeable  # zero-copy, read-only views of the file
    x = np.random.RandomState(1).standard_normal((1, 3, 6, 6)).astype(np.float32)
    a = Session(exe).run(None, {"x": x})[0]
    b = Session(path).run(None, {"x": x})[0]
    np.testing.assert_array_equal(a, b)


def test_same_graph_gives_identical_bytes(tmp_path):
    p1 = build_executable(model(), soc_version="Ascend310P3").save(tmp_path / "a.om")
    p2 = build_executable(model(), soc_version="Ascend310P3").save(tmp_path / "b.om")
    assert p1.read_bytes() == p2.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_weights_are_64_byte_aligned():
    data = build_executable(model()).to_bytes()
    exe = Executable.load(data)
    for w in exe.weights.values():
        assert w.__array_interface__["data"][0] % 64 == np.frombuffer(data, np.uint8).__array_interface__["data"][0] % 64


def test_float_attrs_survive_exactly():
    g = Graph("f")
    x = g.add_input("x", TensorType(DType.f32, (3,)))
    vals = {"a": float("nan"), "b": float("inf"), "c": float("-inf"), "d": -0.0, "e": 0.1, "f": 1e-45,
            "l": [float("nan"), 2.5], "t": np.array([1.5, np.nan], np.float32), "s": np.float32(0.3)}
    g.outputs = [g.add_op("Identity", [x], vals).result]
    exe = Executable.load(build_executable(g).to_bytes())
    attrs = exe.program["steps"][0]["attrs"]
    assert math.isnan(attrs["a"]) and attrs["b"] == math.inf and attrs["c"] == -math.inf
    assert math.copysign(1, attrs["d"]) == -1 and attrs["e"] == 0.1 and attrs["f"] == 1e-45
    assert math.isnan(attrs["l"][0]) and attrs["l"][1] == 2.5
    assert attrs["s"] == float(np.float32(0.3))
    t = exe.weights[attrs["t"]["$weight"]]
    assert t.dtype == np.float32 and t[0] == 1.5 and np.isnan(t[1])


@pytest.fixture(scope="module")
def good() -> bytes:
    return build_executable(model()).to_bytes()


def test_truncated_file(good):
    for n in (0, 5, 40, len(good) // 2, len(good) - 1):
        with pytest.raises(OmFormatError):
            Executable.load(good[:n])
    with pytest.raises(OmFormatError, match="truncated"):
        Executable.load(good[: len(good) - 10])


@pytest.mark.parametrize("where", [70, 0.5, -40, -1])
def test_bit_flip_is_detected(good, where):
    pos = where if isinstance(where, int) else int(len(good) * where)
    bad = bytearray(good)
    bad[pos] ^= 0x10
    with pytest.raises(OmFormatError, match="checksum|corrupt"):
        Executable.load(bytes(bad))


def test_wrong_magic_and_version(good, tmp_path):
    with pytest.raises(OmFormatError, match="magic"):
        Executable.load(b"PK\x03\x04" + good[4:])
    bad = bytearray(good)
    bad[8:12] = (FORMAT_VERSION + 1).to_bytes(4, "little")
    with pytest.raises(OmFormatError, match="version 2"):
        Executable.load(bytes(bad))
    (tmp_path / "x.om").write_bytes(b"hello")
    with pytest.raises(OmFormatError, match="magic"):
        Executable.load(tmp_path / "x.om")
    with pytest.raises(OmFormatError, match="no such file"):
        Executable.load(tmp_path / "missing.om")
    assert good[:8] == MAGIC


def test_loading_never_uses_pickle(good, monkeypatch):
    import pickle

    def boom(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    Session(good).run(None, {"x": np.zeros((1, 3, 6, 6), np.float32)})


def test_to_json_and_summary(good):
    exe = Executable.load(good)
    j = exe.to_json()
    text = json.dumps(j, allow_nan=False)  # strict JSON
    assert "program" in j and j["weights"]["w"] == {"dtype": "f32", "shape": [4, 3, 3, 3], "nbytes": 432}
    assert len(text) < 20000  # no weight bytes
    from compiler.report import format_summary

    s = format_summary(exe.report)  # what `atcpy --mode=6` prints
    assert "cube 1" in s and "1 ops in" in s and '"conv": 1' in s


def test_report_given_by_driver_is_kept():
    rep = {"model": "m", "estimated_latency_ms": 1.25, "ops": {"total": 4}}
    exe = Executable.load(build_executable(model(), report=rep, options={"precision_mode": "force_fp32"}).to_bytes())
    assert exe.report == rep and exe.header["options"] == {"precision_mode": "force_fp32"}


def test_string_weights():
    g = Graph("s")
    x = g.add_input("x", TensorType(DType.i64, (2,)))
    labels = g.const(np.array(["cat", "dog", "emu"], dtype=object), "labels")
    g.outputs = [g.add_op("Gather", [labels, x]).result]
    exe = Executable.load(build_executable(g).to_bytes())
    (y,) = Session(exe).run(None, {"x": np.array([2, 0], np.int64)})
    assert y.tolist() == ["emu", "cat"]
