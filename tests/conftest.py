"""pytest collector for pass tests written as IR text (``tests/passes/**/*.ir``).

Each file starts with a RUN line and holds cases separated by ``// -----``::

    // RUN: atcpy-opt %s --passes="fuse"
    graph @t(...) -> (...) { ... }
    // CHECK: fused.matmul_add_relu
    // CHECK-NOT: Relu
    // -----
    ...

Every case is one pytest item: it runs the pipeline in process
(`compiler.opt.run_opt`: parse with synthesized weights, run with verification
after each pass, print) and hands the printed IR to the PyPI ``filecheck``
package with the case's CHECK / CHECK-NEXT / CHECK-NOT / CHECK-LABEL lines.
A case may carry its own RUN line.  When the pipeline raises, the output is the
one line ``error: <message>``, so cases can CHECK expected errors.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

_SEPARATOR = re.compile(r"^\s*//\s*-----\s*$")
_RUN = re.compile(r"^\s*//\s*RUN:\s*(.*)$")
_GRAPH = re.compile(r"graph\s+@([\w.\-]+)")


@dataclass
class RunLine:
    passes: str = ""
    soc: str | None = None


def parse_run_line(text: str, where: str) -> RunLine:
    """``atcpy-opt %s --passes="..." [--soc_version=X] [| filecheck %s]``."""
    cmd = text.split("|", 1)[0]
    toks = shlex.split(cmd)
    if not toks or toks[0] != "atcpy-opt":
        raise ValueError(f"{where}: RUN line must start with atcpy-opt: {text!r}")
    run = RunLine()
    it = iter(toks[1:])
    for t in it:
        key, eq, val = t.partition("=")
        if key in ("--passes", "--soc_version") and not eq:
            val = next(it, "")
        if key == "--passes":
            run.passes = val
        elif key == "--soc_version":
            run.soc = val
        elif t != "%s":
            raise ValueError(f"{where}: unsupported RUN argument {t!r}")
    return run


def split_cases(text: str) -> list[tuple[int, str]]:
    """(first line index, text) of each ``// -----``-separated case."""
    cases, start, cur = [], 0, []
    for i, line in enumerate(text.splitlines(keepends=True)):
        if _SEPARATOR.match(line):
            cases.append((start, "".join(cur)))
            start, cur = i + 1, []
        else:
            cur.append(line)
    cases.append((start, "".join(cur)))
    return [(s, t) for s, t in cases if t.strip()]


def filecheck(checks: str, output: str, check_name: str) -> tuple[int, str]:
    """Run PyPI filecheck in process: (exit code, its diagnostics)."""
    from filecheck.finput import FInput
    from filecheck.matcher import Matcher
    from filecheck.options import Options
    from filecheck.parser import Parser, pattern_for_opts

    err = io.StringIO()
    # filecheck reports on stderr (and prints some debug lines on stdout): keep both
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        opts = Options(match_filename=check_name, input_file="atcpy-opt-output")
        parser = Parser(opts, io.StringIO(checks), *pattern_for_opts(opts))
        matcher = Matcher(opts, FInput("atcpy-opt-output", FInput.canonicalize_line_ends(output)), parser)
        code = matcher.run()
    return code, err.getvalue()


class IrCheckFailure(Exception):
    def __init__(self, diagnostics: str, output: str) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.output = output


class IrFile(pytest.File):
    def collect(self):
        text = self.path.read_text()
        first_run = next((m.group(1) for m in map(_RUN.match, text.splitlines()) if m), None)
        for k, (start, body) in enumerate(split_cases(text)):
            own = next((m.group(1) for m in map(_RUN.match, body.splitlines()) if m), None)
            run_text = own or first_run
            g = _GRAPH.search(body)
            name = f"{k}-{g.group(1)}" if g else f"{k}"
            yield IrCase.from_parent(self, name=name, body=body, start=start, run_text=run_text)


class IrCase(pytest.Item):
    def __init__(self, *, body: str, start: int, run_text: str | None, **kw) -> None:
        super().__init__(**kw)
        self.body = body
        self.start = start
        self.run_text = run_text

    def runtest(self) -> None:
        from compiler.opt import run_opt

        where = f"{self.path.name}:{self.start + 1}"
        if self.run_text is None:
            raise ValueError(f"{where}: no '// RUN: atcpy-opt %s --passes=...' line")
        run = parse_run_line(self.run_text, where)
        try:
            output = run_opt(self.body, run.passes, soc=run.soc)
        except Exception as e:  # noqa: BLE001 - the error text is the output the CHECK lines see
            output = "error: " + " ".join(str(e).split()) + "\n"
        # pad so filecheck's line numbers are the .ir file's
        checks = "\n" * self.start + self.body
        code, diag = filecheck(checks, output, str(self.path))
        if code != 0:
            raise IrCheckFailure(diag, output)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, IrCheckFailure):
            e = excinfo.value
            return f"FileCheck failed:\n{e.diagnostics}\n--- produced IR ---\n{e.output}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, self.start, f"{self.path.name}::{self.name}"


def pytest_collect_file(parent, file_path: Path):
    if file_path.suffix == ".ir" and "passes" in file_path.parts:
        return IrFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session", autouse=True)
def _temporaries_in_pytest_tmp(tmp_path_factory):
    """Temporaries the code under test makes with `tempfile` (a failing pass's IR dump,
    an executable written before its rename) land in pytest's temp tree, which pytest
    prunes, instead of piling up in the system's /tmp."""
    import tempfile

    old = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempfile"))
    yield
    tempfile.tempdir = old
