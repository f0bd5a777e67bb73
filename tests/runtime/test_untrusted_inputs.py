"""atcpy-run reads input files without trusting their headers (issue 17, item 5): sizes are
checked before anything is allocated or decompressed, and output files never collide."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest

from codegen import build_executable
from ir import DType, Graph, TensorType
from runtime.cli import main, output_basenames


@pytest.fixture()
def om(tmp_path):
    g = Graph("two")
    a = g.add_input("a", TensorType(DType.f32, (2, 3)))
    g.outputs = [g.add_op("Relu", [a]).result, g.add_op("Neg", [a]).result]
    g.outputs[0].name, g.outputs[1].name = "out/1", "out:1"
    return build_executable(g).save(tmp_path / "two.om")


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_a_npy_header_claiming_a_terabyte_is_exit_5_not_a_memory_error(om, tmp_path, capsys):
    bomb = tmp_path / "a.npy"
    bomb.write_bytes(_npy_header((10**12,)) + b"\0" * 64)
    assert main([f"--model={om}", f"--input={bomb}"]) == 5
    err = _err(capsys)
    assert "header says shape [1000000000000]" in err and "2x3" in err


def test_an_npz_member_is_checked_from_its_header_before_it_is_decompressed(om, tmp_path, capsys):
    """A 64 MiB member (a few hundred KB compressed) claiming the wrong shape is refused
    without inflating it: the peak traced allocation stays far below its size."""
    big = 16 * 2**20  # float32 elements: 64 MiB once decompressed
    npz = tmp_path / "in.npz"
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as z, z.open("a.npy", "w", force_zip64=True) as f:
        f.write(_npy_header((big,)))
        chunk = b"\0" * 2**22
        for _ in range(big * 4 // len(chunk)):
            f.write(chunk)
    assert npz.stat().st_size < 2**20
    tracemalloc.start()
    try:
        assert main([f"--model={om}", f"--input={npz}"]) == 5
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "header says shape [16777216]" in _err(capsys)
    assert peak < 8 * 2**20


def test_a_truncated_npy_and_an_object_array_are_input_errors(om, tmp_path, capsys):
    short = tmp_path / "short.npy"
    short.write_bytes(_npy_header((2, 3)) + b"\0" * 8)
    assert main([f"--model={om}", f"--input={short}"]) == 5
    assert "truncated" in _err(capsys)
    obj = tmp_path / "obj.npy"
    obj.write_bytes(_npy_header((2, 3), "|O") + b"\0" * 48)
    assert main([f"--model={om}", f"--input={obj}"]) == 5
    assert "Python objects" in _err(capsys)


def test_a_bin_of_the_wrong_size_is_refused_before_it_is_read(om, tmp_path, capsys):
    wrong = tmp_path / "a.bin"
    with open(wrong, "wb") as f:
        f.truncate(2**40)  # sparse: a terabyte that is never read
    assert main([f"--model={om}", f"--input={wrong}"]) == 5
    assert "1099511627776 bytes" in _err(capsys)


def test_outputs_whose_safe_names_collide_get_distinct_files(om, tmp_path):
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.save(tmp_path / "a.npy", x)
    out = tmp_path / "out"
    assert main([f"--model={om}", f"--input={tmp_path / 'a.npy'}", f"--output={out}"]) == 0
    assert sorted(f.name for f in out.iterdir()) == ["out_1-2.npy", "out_1.npy"]
    np.testing.assert_array_equal(np.load(out / "out_1.npy"), np.maximum(x, 0))
    np.testing.assert_array_equal(np.load(out / "out_1-2.npy"), -x)


def test_output_basenames_are_distinct_even_ignoring_case():
    assert output_basenames(["Y", "y", "y", "a/b"]) == ["Y", "y-2", "y-3", "a_b"]
