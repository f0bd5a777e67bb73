"""``atcpy-opt``: run a pass pipeline on IR text and print the result.

    atcpy-opt model.ir --passes="canonicalize,fuse"
    cat model.ir | atcpy-opt --passes=fuse --soc_version=Ascend310P3 --verify-each

Large arrays come from the ``.npz`` beside the input file when there is one
(a pass-manager dump); otherwise they are synthesized from their keys, so
hand-written IR needs no weight files.  Errors print as one line and exit
nonzero (2 for usage/parse errors, 1 for a failing pass).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ir.core import Graph
from ir.parser import ParseError, parse
from ir.printer import print_graph

__all__ = ["load_ir", "main", "run_opt"]


def _load_soc(name: str | None) -> Any:
    if not name:
        return None
    try:
        from passes.target.soc import load_soc
    except ImportError:
        return None
    return load_soc(name)


def load_ir(text: str, npz: Path | None = None) -> Graph:
    resources: dict[str, np.ndarray] | None = None
    if npz is not None and npz.exists():
        with np.load(npz, allow_pickle=False) as z:
            keys = [str(k) for k in z["__keys__"]] if "__keys__" in z else []
            resources = {k: z[f"a{i}"] for i, k in enumerate(keys)}
    return parse(text, resources, synthesize=True)


def run_opt(text: str, passes: str, soc: Any = None, *, verify_each: bool = True,
            dump_dir: str | Path | None = None, npz: Path | None = None) -> str:
    """Parse `text`, run `passes` on it (verifying after each), return the printed IR.

    `soc` is a `Soc` or a ``--soc_version`` name."""
    from passes import PassContext
    from passes.manager import PassManager

    g = load_ir(text, npz)
    ctx = PassContext(soc=_load_soc(soc) if isinstance(soc, str) else soc)
    if passes.strip():
        PassManager.parse(passes, verify_each=verify_each, dump_dir=dump_dir).run(g, ctx)
    return print_graph(g)


def _exit_code(e: BaseException) -> int:
    from passes.manager import PassFailure

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
        from passes import PassContext
        from passes.manager import PassManager

        if args.input == "-":
            text, npz = sys.stdin.read(), None
        else:
            path = Path(args.input)
            text, npz = path.read_text(), path.with_suffix(".npz")
        g = load_ir(text, npz)
        ctx = PassContext(soc=_load_soc(args.soc_version))
        pm = PassManager.parse(args.passes, verify_each=args.verify_each, dump_dir=args.dump_ir)
        pm.run(g, ctx)
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
