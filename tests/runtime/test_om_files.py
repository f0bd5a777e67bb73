"""Files the runtime writes and reads (issue 17): new files respect the umask, a replaced file
keeps its mode, and a loaded executable survives its file being truncated under it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codegen import build_executable
from ir import DType, Graph, TensorType
from runtime.om import write_atomic

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.name != "posix", reason="umask and file modes are POSIX concepts; Windows has neither")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "f.om", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.om").stat().st_mode) == 0o666 & ~umask


@pytest.mark.skipif(os.name != "posix", reason="umask and file modes are POSIX concepts; Windows has neither")
def test_a_replaced_file_keeps_its_mode(tmp_path):
    p = tmp_path / "f.om"
    p.write_bytes(b"old")
    p.chmod(0o640)
    write_atomic(p, b"new")
    assert p.read_bytes() == b"new" and stat.S_IMODE(p.stat().st_mode) == 0o640


_CHILD = """
import os, sys
import numpy as np
from runtime import Session
sess = Session(sys.argv[1])
x = np.arange(4096, dtype=np.float32).reshape(64, 64)
before = sess.run(None, {"x": x})[0]
os.truncate(sys.argv[1], 100)          # someone rewrites the file under the live session
after = sess.run(None, {"x": x})[0]
print("same" if np.array_equal(before, after) else "changed")
"""


def test_a_loaded_executable_survives_its_file_being_truncated(tmp_path):
    """With the weights mmapped, this killed the process with SIGBUS; they are read into memory."""
    g = Graph("w")
    x = g.add_input("x", TensorType(DType.f32, (64, 64)))
    w = g.const(np.random.default_rng(0).standard_normal((64, 4096)).astype(np.float32), "w")
    g.outputs = [g.add_op("MatMul", [x, w]).result]
    path = build_executable(g).save(tmp_path / "w.om")
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert r.returncode == 0, (r.returncode, r.stderr[-500:])
    assert r.stdout.strip() == "same"
