"""A picture of an `.om`'s memory plan: steps across, arena offsets down, a box per tensor.

    atcpy --mode=1 --om=out/x.om --arena_svg=out/x.arena.svg

Each activation the plan placed in the arena is a rectangle from the step that writes
it to the last step that reads it (graph outputs live to the end), at its byte offset
and size; views and in-place results share their base's rows, so an overlap in the
picture is an alias the plan chose, never two live values colliding.  Hovering a box
shows its name, dtype, shape, offset, bytes and live range (SVG ``<title>``).  Written
by hand: plain SVG needs no plotting library.
"""

from __future__ import annotations

import colorsys
import html
from typing import Any

__all__ = ["arena_svg", "live_ranges"]

WIDTH, HEIGHT, MARGIN = 1000, 600, 60


def live_ranges(program: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """Activation index -> (first step writing it, last step reading it)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for k, st in enumerate(program.get("steps", [])):
        for ref in st.get("inputs", []):
            if isinstance(ref, list) and len(ref) == 2 and ref[0] == "a" and isinstance(ref[1], int):
                last[ref[1]] = k
        for a in st.get("outputs", []):
            if isinstance(a, int):
                first.setdefault(a, k)
                last[a] = max(last.get(a, k), k)
    end = max(len(program.get("steps", [])) - 1, 0)
    for out in program.get("outputs", []):
        ref = out.get("ref") if isinstance(out, dict) else None
        if isinstance(ref, list) and len(ref) == 2 and ref[0] == "a" and ref[1] in first:
            last[ref[1]] = end
    return {a: (first[a], last.get(a, first[a])) for a in first}


def _color(i: int) -> str:
    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.45, 0.92)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def arena_svg(exe: Any) -> str:
    """The SVG text of `exe`'s arena plan (an `runtime.om.Executable`)."""
    prog = exe.program
    acts = prog.get("activations", [])
    arena = int(exe.header.get("memory", {}).get("arena_bytes", 0)) or max(
        (a["offset"] + a["nbytes"] for a in acts if a.get("offset", -1) >= 0), default=1)
    steps = max(len(prog.get("steps", [])), 1)
    sx, sy = (WIDTH - 2 * MARGIN) / steps, (HEIGHT - 2 * MARGIN) / max(arena, 1)
    boxes = []
    for i, (k0, k1) in sorted(live_ranges(prog).items()):
        a = acts[i] if i < len(acts) else {}
        off, nb = int(a.get("offset", -1)), int(a.get("nbytes", 0))
        if off < 0 or nb <= 0:
            continue  # not in the arena: inputs, dynamic or host values
        x, y = MARGIN + k0 * sx, MARGIN + off * sy
        w, h = max((k1 - k0 + 1) * sx, 1.0), max(nb * sy, 0.5)
        tip = (f"{a.get('name', i)}: {a.get('dtype')} {a.get('shape')}, offset {off}, {nb} bytes, "
               f"steps {k0}..{k1}")
        boxes.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" fill="{_color(i)}" '
                     f'stroke="#333" stroke-width="0.3"><title>{html.escape(tip)}</title></rect>')
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">')
    frame = (f'<rect x="{MARGIN}" y="{MARGIN}" width="{WIDTH - 2 * MARGIN}" height="{HEIGHT - 2 * MARGIN}" '
             f'fill="none" stroke="#000"/>')
    labels = (f'<text x="{WIDTH / 2}" y="{HEIGHT - 20}" text-anchor="middle">step (0..{steps - 1})</text>'
              f'<text x="15" y="{HEIGHT / 2}" transform="rotate(-90 15 {HEIGHT / 2})" text-anchor="middle">'
              f'arena offset (0..{arena} bytes)</text>'
              f'<text x="{MARGIN}" y="30">{html.escape(str(exe.header.get("model", "")))}: '
              f'{len(boxes)} tensors in a {arena}-byte arena</text>')
    return "\n".join([head, frame, *boxes, labels, "</svg>"]) + "\n"
