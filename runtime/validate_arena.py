"""Check that no two arena values live at the same time share bytes.

`runtime.validate` checks that each arena slot lies inside the arena; this checks the
plan itself, the invariant `passes.assign_buffers` keeps: values are grouped into
buffers (a view's result with its operand, an in-place op's result with the operand
it overwrites, a Concat's operands placed in their slices of its result), a buffer is
live from its first member's step to its last member's last read (a graph output: to
after the last step), and two buffers live at a common step never overlap.  An
`.om` whose ``activations[i].offset`` was edited onto a live value's bytes would
otherwise run and silently return wrong numbers:

    activation 2.offset: [1, 1025) overlaps activation 1 ([0, 4096)), which is live
    over steps 0..2 while activation 2 is live over steps 1..3
"""

from __future__ import annotations

from typing import Any

from ir.registry import ELEMENTWISE, VIEW, lookup

__all__ = ["check_arena"]


def _aliasing(st: dict[str, Any]) -> str | None:
    """How a step's result may share its operands' bytes: ``"same"`` (a view, a Concat's
    slices: the same data), ``"over"`` (an elementwise op overwriting an operand it reads
    for the last time), None (it may not)."""
    od = lookup(st["kernel"])
    if st["kernel"] == "Concat" or (od is not None and od.has(VIEW)):
        return "same"
    if st["attrs"].get("inplace") or (od is not None and od.has(ELEMENTWISE)):
        return "over"
    return None


class _Groups:
    """Union-find over activation indices: the plan's buffers."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        root = self.parent.setdefault(a, a)
        while root != self.parent[root]:
            root = self.parent[root]
        while a != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _live_ranges(c: Any, span: dict[int, tuple[int, int]]) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(first step, last read) of each arena value and the buffers (root -> members)."""
    steps, groups = c.p["steps"], _Groups()
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    overwritten: list[tuple[int, int, int]] = []  # (step, result, the operand it overwrites)
    for k, st in enumerate(steps):
        reads = [r[1] for r in st["inputs"] if r is not None and r[0] == "a" and r[1] in span]
        for a in reads:
            last[a] = k
        how = _aliasing(st)
        for a in st["outputs"]:
            if a not in span:
                continue
            first[a] = last[a] = k
            lo, hi = span[a]
            for b in reads if how else ():
                if span[b][0] < hi and lo < span[b][1]:
                    groups.union(a, b)
                    if how == "over":
                        overwritten.append((k, a, b))
    for e in c.p["outputs"]:
        if e["ref"][0] == "a" and e["ref"][1] in span:
            last[e["ref"][1]] = len(steps)
    for k, a, b in overwritten:
        if last[b] != k:
            c.fail(f"activation {a}.offset", f"step {k} writes it over activation {b}, which step "
                                             f"{last[b]} reads later")
    members: dict[int, list[int]] = {}
    for a in first:
        members.setdefault(groups.find(a), []).append(a)
    live = {g: [min(first[a] for a in ms), max(last[a] for a in ms)] for g, ms in members.items()}
    return live, members


def check_arena(c: Any) -> None:
    """`c` is a `runtime.validate` checker whose field checks passed."""
    span = {i: (a["offset"], a["offset"] + a["nbytes"]) for i, a in enumerate(c.acts)
            if a["offset"] >= 0 and a["nbytes"] > 0}
    if not span:
        return
    live, members = _live_ranges(c, span)
    active: list[tuple[int, int, int]] = []  # (member, its buffer, the buffer's last step)
    for g in sorted(live, key=lambda g: live[g][0]):
        start, end = live[g]
        active = [x for x in active if x[2] >= start]
        for a in members[g]:
            lo, hi = span[a]
            for b, h, h_end in active:
                if span[b][0] < hi and lo < span[b][1]:
                    c.fail(f"activation {a}.offset", f"[{lo}, {hi}) overlaps activation {b} ([{span[b][0]}, {span[b][1]})), "
                                                     f"which is live over steps {live[h][0]}..{h_end} while "
                                                     f"activation {a} is live over steps {start}..{end}")
        active.extend((a, g, end) for a in members[g])
