"""A compile killed with SIGKILL while it writes leaves a hidden temp file; the next compile into
the same place removes it, and nothing is left in the temp directory (issue 17)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# the child compiles with fsync slowed down, so the parent can catch it mid-write
_CHILD = """
import os, sys, time
real = os.fsync
def slow(fd):
    open(sys.argv[3], "w").close()   # tell the parent the temp file is being written
    time.sleep(60)
    real(fd)
os.fsync = slow
from compiler.cli import main
sys.exit(main([f"--model={sys.argv[1]}", "--soc_version=Ascend310P3", f"--output={sys.argv[2]}"]))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL does not exist on Windows")
def test_a_killed_compile_leaves_nothing_after_the_next_one(model, tmp_path):
    out, flag, tmpdir = tmp_path / "out" / "m", tmp_path / "writing", tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(model), str(out), str(flag)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child never reached its write"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    left = [p.name for p in out.parent.iterdir()]
    assert any(n.endswith(".tmp") for n in left), left  # the kill really interrupted a write
    assert not (out.parent / "m.om").exists()  # and nothing half-written took the real name

    again = subprocess.run([sys.executable, "-m", "compiler.cli", f"--model={model}", "--soc_version=Ascend310P3",
                            f"--output={out}"], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.om"]
    assert list(tmpdir.iterdir()) == []
