"""``atcpy-opt``: run a pass pipeline on IR text and print the result.

    atcpy-opt model.ir --passes="canonicalize,fuse"
    cat model.ir | atcpy-opt --passes=fuse --soc_version=Ascend310P3 --verify-each

An input file is read with `passes.manager.load_dump`: large arrays come from
the ``.npz`` beside it when there is one (a pass-manager dump); otherwise, as
for IR on stdin, they are synthesized from their keys, so hand-written IR needs
no weight files.  Errors print as one line and exit nonzero (2 for usage/parse
errors, 1 for a failing pass).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ir.core import Graph
from ir.parser import ParseError, parse
from ir.printer import print_graph
from ir.verifier import verify
from passes import PassContext
from passes.manager import PassFailure, PassManager, load_dump
from passes.target.soc import load_soc

__all__ = ["main", "run_opt"]


def run_opt(source: str | Graph, passes: str, soc: Any = None, *, verify_each: bool = True,
            dump_dir: str | Path | None = None) -> str:
    """Run `passes` on `source` (IR text, its weights synthesized, or a graph),
    verifying after each pass; return the printed IR.

    `soc` is a `Soc` or a ``--soc_version`` name."""
    g = source if isinstance(source, Graph) else parse(source, synthesize=True)
    PassManager.parse(passes, verify_each=verify_each, dump_dir=dump_dir).run(g, _context(soc))
    return print_graph(g)


def _context(soc: Any) -> PassContext:
    if isinstance(soc, str):
        soc = load_soc(soc) if soc else None
    return PassContext(soc=soc)


def _exit_code(e: BaseException) -> int:
    if isinstance(e, PassFailure):
        return 1
    code = getattr(e, "exit_code", None)
    if isinstance(code, int):
        return code
    return 2 if isinstance(e, (ParseError, ValueError, OSError)) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="atcpy-opt", description="Run atcpy passes on IR text.")
    ap.add_argument("input", nargs="?", default="-", help="IR file ('-' or nothing: stdin)")
    ap.add_argument("--passes", default="", help='pipeline, e.g. "canonicalize,fuse,tile{size=256}"')
    ap.add_argument("--soc_version", default=None)
    ap.add_argument("--verify-each", dest="verify_each", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--dump_ir", default=None, help="directory for NN-<pass>.ir dumps")
    ap.add_argument("--pass_timing", action="store_true", help="print the timing table to stderr")
    ap.add_argument("-o", "--output", default="-")
    args = ap.parse_args(argv)
    try:
        g = parse(sys.stdin.read(), synthesize=True) if args.input == "-" else load_dump(args.input)
        verify(g)  # IR that does not verify is the user's input error (exit 2), whatever --verify-each says
        pm = PassManager.parse(args.passes, verify_each=args.verify_each, dump_dir=args.dump_ir)
        pm.run(g, _context(args.soc_version))
        out = print_graph(g)
        if args.output == "-":
            sys.stdout.write(out)
        else:
            Path(args.output).write_text(out)
        if args.pass_timing:
            sys.stderr.write(pm.timing_report())
    except Exception as e:  # noqa: BLE001 - one line for the user, not a traceback
        msg = " ".join(str(e).split())
        print(f"atcpy-opt: error: {msg}", file=sys.stderr)
        return _exit_code(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
