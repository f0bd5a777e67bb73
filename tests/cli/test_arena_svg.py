"""`atcpy --mode=1 --om=x.om --arena_svg=x.svg`: the memory plan drawn as SVG (issue 19, item 5)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from compiler import compile_model
from compiler.arena_svg import live_ranges
from compiler.cli import main


def test_every_arena_tensor_is_a_box_at_its_offset_and_live_range(model, tmp_path, capsys):
    exe = compile_model(str(model))
    om = exe.save(tmp_path / "m.om")
    svg = tmp_path / "m.arena.svg"
    assert main(["--mode=1", f"--om={om}", f"--arena_svg={svg}"]) == 0
    assert "m.arena.svg" in capsys.readouterr().out
    root = ET.parse(svg).getroot()  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    rects = [r for r in root.iter(f"{ns}rect") if r.find(f"{ns}title") is not None]
    acts = exe.program["activations"]
    placed = {i for i, a in enumerate(acts) if a["offset"] >= 0 and a["nbytes"] > 0}
    ranges = live_ranges(exe.program)
    assert len(rects) == len(placed & set(ranges)) > 0
    for r in rects:  # the tooltip's offset and live range are the plan's
        tip = r.find(f"{ns}title").text
        name = tip.split(":")[0]
        i = next(k for k, a in enumerate(acts) if a["name"] == name)
        assert f"offset {acts[i]['offset']}, {acts[i]['nbytes']} bytes" in tip
        k0, k1 = map(int, re.search(r"steps (\d+)\.\.(\d+)", tip).groups())
        assert (k0, k1) == ranges[i]


def test_arena_svg_is_a_mode_1_output_with_usage_errors(model, tmp_path, capsys):
    om = compile_model(str(model)).save(tmp_path / "m.om")
    assert main(["--mode=1", f"--om={om}"]) == 2
    assert "--arena_svg" in capsys.readouterr().err
    assert main(["--mode=1", f"--om={om}", f"--arena_svg={tmp_path}"]) == 2  # a directory
