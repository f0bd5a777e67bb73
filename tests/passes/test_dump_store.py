"""``--dump_ir`` writes each weight once, however many passes leave it as it was (issue 17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler import compile_model
from passes.manager import load_dump

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.onnx"


def test_a_compile_with_dump_ir_writes_the_weights_once(tmp_path):
    exe = compile_model(str(EXAMPLE), dump_ir=str(tmp_path))
    dumps = sorted(tmp_path.glob("*.ir"))
    assert len(dumps) >= 8  # the input and every pass of the default pipeline
    weights = exe.header["report"]["memory"]["weights_bytes"]
    stored = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.suffix in (".npy", ".npz"))
    # every distinct array once -- the float weights, what folding and layout passes made of
    # them -- not once per dump: about 3 copies here against len(dumps) before
    assert stored < 4 * weights < len(dumps) * weights


def test_every_dump_reloads_with_its_own_arrays(tmp_path):
    compile_model(str(EXAMPLE), dump_ir=str(tmp_path))
    first, last = (load_dump(p) for p in (sorted(tmp_path.glob("*.ir"))[i] for i in (0, -1)))
    consts = [op.attrs["value"] for op in first.ops if op.kind == "const" and op.attrs["value"].size > 16]
    assert consts and all(isinstance(a, np.ndarray) for a in consts)
    assert any(op.kind == "const" for op in last.ops)
