"""atcpy-run end to end: inputs as .npy/.npz/.bin, outputs, loops, profile, one-line errors with exit codes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from codegen import build_executable
from ir import DType, Graph, TensorType
from runtime.cli import main


@pytest.fixture()
def om(tmp_path):
    g = Graph("two")
    a = g.add_input("a", TensorType(DType.f32, (2, 3)))
    b = g.add_input("b", TensorType(DType.i64, (3,)))
    s = g.add_op("Add", [a, g.add_op("Cast", [b], {"to": 1}).result]).result
    s.name = "sum/out:0"
    g.outputs = [s]
    return build_executable(g).save(tmp_path / "two.om")


A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.array([10, 20, 30], np.int64)


def test_npy_inputs_to_npy_outputs(om, tmp_path, capsys):
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", B)
    out = tmp_path / "out"
    rc = main([f"--model={om}", f"--input={tmp_path / 'a.npy'},{tmp_path / 'b.npy'}", f"--output={out}", "--loop=3"])
    assert rc == 0
    files = list(out.iterdir())
    assert [f.name for f in files] == ["sum_out_0.npy"]  # name made safe for the file system
    np.testing.assert_array_equal(np.load(files[0]), A + B)
    assert "average latency" in capsys.readouterr().out


def test_bin_and_npz_inputs_and_txt_output(om, tmp_path):
    (tmp_path / "a.bin").write_bytes(A.tobytes())
    (tmp_path / "b.bin").write_bytes(B.tobytes())
    rc = main([f"--model={om}", f"--input={tmp_path / 'a.bin'},{tmp_path / 'b.bin'}", f"--output={tmp_path}",
               "--outfmt=TXT"])
    assert rc == 0
    np.testing.assert_allclose(np.loadtxt(tmp_path / "sum_out_0.txt"), A + B)
    np.savez(tmp_path / "in.npz", b=B, a=A)
    assert main([f"--model={om}", f"--input={tmp_path / 'in.npz'}", f"--output={tmp_path / 'z'}"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "z" / "sum_out_0.npy"), A + B)


def test_profile_writes_trace(om, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", a=A, b=B)
    assert main([f"--model={om}", f"--input={tmp_path / 'in.npz'}", f"--output={tmp_path}", "--profile"]) == 0
    assert (tmp_path / "profile.json").is_file()
    assert "ms/run" in capsys.readouterr().out


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("atcpy-run: error:") and "Traceback" not in err
    return err


def test_errors_are_one_line_with_exit_codes(om, tmp_path, capsys):
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "a64.npy", A.astype(np.float64))
    np.save(tmp_path / "b.npy", B)
    assert main([f"--model={om}", f"--input={tmp_path / 'a.npy'}"]) == 5
    assert "2 input(s)" in _err(capsys)
    assert main([f"--model={om}", f"--input={tmp_path / 'a64.npy'},{tmp_path / 'b.npy'}"]) == 5
    assert "'a'" in _err(capsys)
    (tmp_path / "short.bin").write_bytes(b"\0" * 5)
    assert main([f"--model={om}", f"--input={tmp_path / 'short.bin'},{tmp_path / 'b.npy'}"]) == 5
    assert "needs 24" in _err(capsys)
    bad = tmp_path / "bad.om"
    bad.write_bytes(om.read_bytes()[:-3])
    assert main([f"--model={bad}", f"--input={tmp_path / 'a.npy'},{tmp_path / 'b.npy'}"]) == 4
    assert "invalid .om" in _err(capsys)
    assert main(["--loop=2"]) == 2
    _err(capsys)
    assert main([f"--model={tmp_path / 'nope.om'}"]) == 2
    _err(capsys)
    assert main([f"--model={om}", "--loop=0"]) == 2
    _err(capsys)


def test_subprocess_entry_point(om, tmp_path):
    np.savez(tmp_path / "in.npz", a=A, b=B)
    r = subprocess.run([sys.executable, "-m", "runtime.cli", f"--model={om}", f"--input={tmp_path / 'in.npz'}",
                        f"--output={tmp_path / 'o'}"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "sum_out_0.npy"), A + B)
