"""The table and the Done-means verdicts of `bench/perplexity.py` (issue 16).

Each verdict line reads ``PASS`` or ``FAIL``, what was checked and the numbers.
A check whose rows failed to build or run is a ``FAIL`` naming the missing row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Row", "increase", "print_table", "verdicts"]


@dataclass
class Row:
    """One variant's result; ``error`` (and no perplexity) when it failed."""

    name: str
    engine: str
    bits: str
    ppl: float | None = None
    weight_bytes: int | None = None
    matrix_bytes: int | None = None
    seconds: float = 0.0
    error: str | None = None
    block: int | None = None  # onnxruntime's block size (the MatMulNBits variants)
    nbits: int | None = None  # onnxruntime's weight bits (the MatMulNBits variants)
    note: str = ""  # e.g. an INT8 KV cache asked for that the executable does not have


def increase(row: Row, rows: list[Row]) -> float | None:
    """``row``'s perplexity increase over its engine's fp32, in percent."""
    base = next((r for r in rows if r.engine == row.engine and r.name == "fp32"), None)
    if row.ppl is None or base is None or base.ppl is None:
        return None
    return (row.ppl / base.ppl - 1) * 100


def _ratio(row: Row, rows: list[Row]) -> float | None:
    base = next((r.matrix_bytes for r in rows if r.engine == row.engine and r.name == "fp32"), None)
    if base is None:  # transformers has no byte count: against atcpy's fp32
        base = next((r.matrix_bytes for r in rows if r.engine == "atcpy" and r.name == "fp32"), None)
    return row.matrix_bytes / base if row.matrix_bytes is not None and base else None


def print_table(rows: list[Row], out: Any = print) -> None:
    head = (f"{'variant':<20} {'engine':<12} {'bits/group':<13} {'ppl':>8} {'vs fp32':>9} "
            f"{'weights B':>10} {'matrices B':>10} {'ratio':>6} {'s':>6}")
    out(head)
    out("-" * len(head))
    for r in rows:
        lead = f"{r.name:<20} {r.engine:<12} {r.bits:<13}"
        if r.error:
            out(f"{lead} failed: {r.error}")
            continue
        inc, ratio = increase(r, rows), _ratio(r, rows)
        wb = "-" if r.weight_bytes is None else str(r.weight_bytes)
        mb = "-" if r.matrix_bytes is None else str(r.matrix_bytes)
        out(f"{lead} {r.ppl:>8.4f} {'-' if inc is None else f'{inc:+.3f}%':>9} {wb:>10} {mb:>10} "
            f"{'-' if ratio is None else f'{ratio:.3f}':>6} {r.seconds:>6.1f}" + (f"  {r.note}" if r.note else ""))
    out("-" * len(head))


def _line(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


def _atc(rows: list[Row], name: str) -> Row | None:
    return next((r for r in rows if r.engine == "atcpy" and r.name == name), None)


def _missing(name: str, r: Row | None) -> str:
    return f"atcpy {name}: " + ("no such row" if r is None else f"failed ({r.error})")


def _best_ort(rows: list[Row], bits: int, block: int | None) -> tuple[float, str] | None:
    """The smallest increase among onnxruntime's MatMulNBits variants of ``bits`` (at ``block``; any when None)."""
    cands = [(increase(r, rows), f"{r.name} {r.bits}") for r in rows
             if r.engine == "onnxruntime" and r.nbits == bits and (block is None or r.block == block)
             and r.ppl is not None]
    cands = [(v, n) for v, n in cands if v is not None]
    return min(cands) if cands else None


def _check_w8(rows: list[Row]) -> list[str]:
    w8 = _atc(rows, "W8A16")
    if w8 is None or w8.ppl is None:
        why = _missing("W8A16", w8)
        return [_line(False, f"W8A16 within 0.5% of fp32 -- {why}"),
                _line(False, f"W8A16 within onnxruntime's best 8-bit increase + 0.05 points -- {why}")]
    inc = increase(w8, rows)
    out = [_line(inc is not None and inc <= 0.5, f"W8A16 within 0.5% of fp32: {inc:+.3f}%")]
    best = _best_ort(rows, 8, None)
    if best is None:
        out.append(_line(False, "W8A16 within onnxruntime's best 8-bit + 0.05%: no onnxruntime 8-bit row ran"))
    else:
        out.append(_line(inc <= best[0] + 0.05, f"W8A16 within onnxruntime's best 8-bit increase + 0.05 points: "
                                                 f"{inc:+.3f}% vs {best[0]:+.3f}% ({best[1]}) + 0.05"))
    return out


def _check_kv(rows: list[Row]) -> list[str]:
    parts, ok, worst = [], True, None
    for r in rows:
        if r.engine != "atcpy" or not r.name.endswith(" +kv8"):
            continue
        base = _atc(rows, r.name[:-len(" +kv8")])
        if r.ppl is None or base is None or base.ppl is None or r.note:
            ok = False
            parts.append(f"{r.name}: {r.note or ('failed' if r.ppl is None else 'no base row')}")
            continue
        add = (r.ppl / base.ppl - 1) * 100
        ok &= add <= 0.5
        worst = add if worst is None else max(worst, add)
        parts.append(f"{base.name} {add:+.3f}%")
    if not parts:
        return [_line(False, "INT8 KV cache adds <= 0.5%: no +kv8 rows")]
    w = "" if worst is None else f" (worst {worst:+.3f}%)"
    return [_line(ok, f"INT8 KV cache adds <= 0.5% over the weights' own{w}: " + ", ".join(parts))]


def _check_w4(rows: list[Row], group: int) -> str:
    names = [f"W4A16 g{group} {r}" for r in ("RTN", "GPTQ", "RTN asym", "GPTQ asym")]
    mine = [r for r in (_atc(rows, n) for n in names) if r]
    ran = [(increase(r, rows), r.name) for r in mine if r.ppl is not None]
    best = _best_ort(rows, 4, group)
    what = f"W4A16 g{group} increase <= onnxruntime's best 4-bit at block {group}"
    if not ran:
        return _line(False, f"{what} -- atcpy W4A16 g{group}: " + ("no rows" if not mine else "failed"))
    if best is None:
        return _line(False, f"{what} -- no onnxruntime 4-bit block-{group} row ran")
    inc, name = min(ran)
    each = ", ".join(f"{n} {v:+.3f}%" for v, n in ran)
    return _line(inc <= best[0], f"{what}: {inc:+.3f}% ({name}; {each}) vs {best[0]:+.3f}% ({best[1]})")


def _check_bytes(rows: list[Row]) -> list[str]:
    out = []
    for name, limit in (("W4A16 g128 RTN", 0.15), ("W8A16", 0.27)):
        r = _atc(rows, name)
        ratio = None if r is None else _ratio(r, rows)
        if ratio is None:
            out.append(_line(False, f"{name} matrices <= {limit}x fp32 -- {_missing(name, r)}"))
        else:
            out.append(_line(ratio <= limit, f"{name} matrices' bytes <= {limit}x fp32: {ratio:.3f}x "
                                             f"({r.matrix_bytes} of {r.matrix_bytes / ratio:.0f} B)"))
    return out


def verdicts(rows: list[Row], generation: float | None, gen_note: str = "") -> list[str]:
    """One line per Done-means criterion of issue 16."""
    out = _check_w8(rows)[:1] + _check_kv(rows) + [_check_w4(rows, 128), _check_w4(rows, 32)]
    out += _check_w8(rows)[1:] + _check_bytes(rows)
    if generation is None:
        out.append(_line(False, f"greedy W8A16 + INT8 KV matches fp32 on >= 90% of new tokens -- {gen_note}"))
    else:
        out.append(_line(generation >= 90.0, f"greedy W8A16 + INT8 KV matches fp32 on >= 90% of new tokens: "
                                             f"{generation:.1f}% {gen_note}"))
    return out
