"""The pass manager: a textual pipeline, run in order, verified, dumped and timed.

    pm = PassManager.parse("canonicalize,fuse,tile{size=256},place", verify_each=True, dump_dir="dumps")
    results = pm.run(graph, ctx)   # [{"name": "canonicalize", "seconds": 0.01, "changed": True}, ...]
    print(pm.timing_report())

Pipeline syntax: pass names separated by commas; options in braces set the
pass dataclass's fields (``tile{size=256 pad=true}``; options separated by
spaces or commas; lists as ``[1,2]``).  Dumps: ``00-input.ir`` then
``NN-<pass>.ir`` after each pass; their large arrays are written once into
``arrays/`` (an array a pass left alone is not written again) and
``NN-<pass>.npz`` maps the dump's resource keys to those files, so `load_dump`
restores it exactly (``parse(..., synthesize=True)`` also reads the ``.ir`` alone).

A pass that raises, or leaves IR the verifier rejects, raises `PassFailure`
naming the pass, the passes before it and the dump of its input IR (written to
a temporary directory when no dump directory was given).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ir.core import Graph
from ir.errors import AtcError, InternalError, UsageError
from ir.parser import parse
from ir.printer import print_graph
from ir.verifier import VerifyError, verify
from passes._dump_store import ARRAYS_DIR, DumpStore
from passes.base import PASSES, Pass, PassContext, log

__all__ = [
    "PassFailure",
    "PassManager",
    "PassResult",
    "PipelineError",
    "format_timing",
    "load_dump",
    "parse_pipeline",
    "split_pipeline",
    "write_dump",
]


class PipelineError(UsageError, ValueError):
    """The pipeline text is malformed or names an unknown pass/option/value."""


INPUT = "(input)"


class PassFailure(RuntimeError):
    """A pass raised, or left IR that does not verify."""

    def __init__(self, pass_name: str, before: list[str], dump_path: Path | None, cause: BaseException) -> None:
        self.pass_name = pass_name
        self.before = before
        self.dump_path = dump_path
        self.cause = cause
        after = f"after {', '.join(before)}" if before else "as the first pass"
        where = (f"; its input IR is in {dump_path}" if dump_path
                 else "; for a dump of its input IR, rerun with --dump_ir=DIR or --log=debug")
        what = "left IR that does not verify" if isinstance(cause, VerifyError) else "failed"
        if pass_name == INPUT:
            super().__init__(f"the input IR does not verify (no pass has run): {cause}")
        else:
            super().__init__(f"pass '{pass_name}' ({after}) {what}: {type(cause).__name__}: {cause}{where}")


@dataclass
class PassResult:
    name: str
    seconds: float
    changed: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "changed": self.changed}


# -- pipeline text ---------------------------------------------------------------------------
def split_pipeline(text: str, seps: str = ",") -> list[str]:
    """Split on `seps` outside braces/brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"unbalanced '{ch}' in pipeline {text!r}")
        if ch in seps and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise PipelineError(f"unbalanced braces in pipeline {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _convert(raw: str, typ: Any, where: str) -> Any:
    """Convert option text to the field's type (int, float, bool, str, list[...], X | None)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw.lower() in ("none", "null") and len(args) < len(typing.get_args(typ)):
            return None
        errors = []
        for a in args:
            try:
                return _convert(raw, a, where)
            except PipelineError as e:
                errors.append(str(e))
        raise PipelineError(errors[0] if errors else f"{where}: cannot convert {raw!r}")
    if origin in (list, tuple):
        inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
        body = raw.strip()
        if body.startswith("[") and body.endswith("]"):
            body = body[1:-1]
        items = [_convert(x, inner, where) for x in split_pipeline(body, ", ")]
        return items if origin is list else tuple(items)
    if typ is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise PipelineError(f"{where}: {raw!r} is not a boolean (true/false)")
    if typ is int:
        try:
            return int(raw, 0)
        except ValueError:
            raise PipelineError(f"{where}: {raw!r} is not an integer") from None
    if typ is float:
        try:
            return float(raw)
        except ValueError:
            raise PipelineError(f"{where}: {raw!r} is not a number") from None
    if typ is str or typ is Any:
        return raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'" else raw
    raise PipelineError(f"{where}: options of type {typ} cannot be set from text")


def _options(cls: type[Pass]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(cls) if f.init}


def _type_name(t: Any) -> str:
    if isinstance(t, type) and not typing.get_args(t):
        return t.__name__
    return str(t).replace("typing.", "")


def _make_pass(item: str) -> Pass:
    name, _, rest = item.partition("{")
    name = name.strip()
    if name not in PASSES:
        raise PipelineError(f"unknown pass {name!r}; registered passes: {', '.join(sorted(PASSES))}")
    cls = PASSES[name]
    kwargs: dict[str, Any] = {}
    if rest:
        if not rest.rstrip().endswith("}"):
            raise PipelineError(f"{item!r}: options must end with '}}'")
        fields = _options(cls)
        for opt in split_pipeline(rest.rstrip()[:-1], ", "):
            key, eq, raw = opt.partition("=")
            key = key.strip()
            if key not in fields:
                valid = ", ".join(f"{k}: {_type_name(t)}" for k, t in fields.items()) or "none"
                raise PipelineError(f"pass {name!r} has no option {key!r}; its options: {valid}")
            if not eq:
                if fields[key] is bool:
                    kwargs[key] = True
                    continue
                raise PipelineError(f"option {name}{{{key}}} needs a value ({key}=...)")
            kwargs[key] = _convert(raw.strip(), fields[key], f"option {name}{{{key}}}")
    return cls(**kwargs)


def parse_pipeline(text: str) -> list[Pass]:
    """``"canonicalize,tile{size=256}"`` → pass instances."""
    return [_make_pass(item) for item in split_pipeline(text)]


def format_pipeline(passes: list[Pass]) -> str:
    out = []
    for p in passes:
        opts = [f"{f.name}={getattr(p, f.name)}" for f in dataclasses.fields(p) if f.init]
        out.append(p.name + ("{" + " ".join(opts) + "}" if opts else ""))
    return ",".join(out)


# -- dumps -------------------------------------------------------------------------------------
def write_dump(graph: Graph, path: Path, store: DumpStore | None = None) -> Path:
    """Write `graph` as IR text at `path`; its large arrays go to `store` (by default one
    under `path`'s directory), each written once however many dumps share it, and the
    ``.npz`` beside `path` maps the IR's resource keys to their files."""
    resources: dict[str, np.ndarray] = {}
    text = print_graph(graph, resources)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    from passes._meta import is_mapped_or_placeholder

    store = store if store is not None else DumpStore(path.parent)
    # weights never loaded (a memory plan of a model with external data) are left out: a 7B
    # model's failure dump would otherwise write tens of GB; the IR text still names them
    keys = [k for k in resources if not is_mapped_or_placeholder(resources[k])]
    files = [store.put(resources[k].astype(str) if resources[k].dtype == object else resources[k]) for k in keys]
    # keys go in a string array: resource keys need not be valid npz member names
    np.savez(path.with_suffix(".npz"), __keys__=np.array(keys, dtype=str), __files__=np.array(files, dtype=str))
    return path


def load_dump(path: str | Path) -> Graph:
    """Parse a dump back, with its arrays from the `.npz` index beside it (and the store's
    files it names) when present."""
    path = Path(path)
    npz = path.with_suffix(".npz")
    resources: dict[str, np.ndarray] = {}
    if npz.exists():
        with np.load(npz, allow_pickle=False) as z:
            keys = [str(k) for k in z["__keys__"]] if "__keys__" in z else []
            if "__files__" in z:
                where = path.parent / ARRAYS_DIR
                resources = {k: np.load(where / str(f), allow_pickle=False) for k, f in zip(keys, z["__files__"])}
            else:  # an older dump: the arrays inside the .npz
                resources = {k: z[f"a{i}"] for i, k in enumerate(keys)}
    return parse(path.read_text(), resources, synthesize=not npz.exists())


def format_timing(results: list[PassResult], verify_seconds: float = 0.0) -> str:
    """A table in the manner of MLIR's ``--mlir-timing``."""
    total = sum(r.seconds for r in results) + verify_seconds
    rule = "===" + "-" * 72 + "==="
    lines = [rule, "Pass execution timing report".center(78), rule,
             f"  Total Execution Time: {total:.4f} seconds", "",
             "  ----Wall Time----  ----Changed----  ----Name----"]

    def row(sec: float, changed: str, name: str) -> str:
        pct = 100.0 * sec / total if total > 0 else 0.0
        return f"  {sec:10.4f} ({pct:5.1f}%)  {changed:>15}  {name}"

    for r in results:
        lines.append(row(r.seconds, "yes" if r.changed else "no", r.name))
    if verify_seconds:
        lines.append(row(verify_seconds, "", "(A) verifier"))
    lines.append(row(total, "", "Total"))
    return "\n".join(lines) + "\n"


# -- the manager -----------------------------------------------------------------------------
@dataclass
class PassManager:
    passes: list[Pass]
    verify_each: bool = False
    dump_dir: Path | None = None
    results: list[PassResult] = field(default_factory=list)
    verify_seconds: float = 0.0
    store: DumpStore | None = field(default=None, repr=False)  # the dumps' arrays, each written once

    def __post_init__(self) -> None:
        if self.dump_dir is not None:
            self.dump_dir = Path(self.dump_dir)
            self.store = DumpStore(self.dump_dir)

    @classmethod
    def parse(cls, text: str, *, verify_each: bool = False, dump_dir: str | Path | None = None) -> PassManager:
        return cls(parse_pipeline(text), verify_each=verify_each,
                   dump_dir=Path(dump_dir) if dump_dir is not None else None)

    @property
    def pipeline(self) -> str:
        return format_pipeline(self.passes)

    def _verify(self, graph: Graph) -> None:
        t0 = time.perf_counter()
        try:
            verify(graph)
        finally:
            self.verify_seconds += time.perf_counter() - t0

    def run(self, graph: Graph, ctx: PassContext | None = None) -> list[dict[str, Any]]:
        """Run every pass in order on `graph` (in place); returns the per-pass results."""
        ctx = ctx if ctx is not None else PassContext()
        self.results = []
        self.verify_seconds = 0.0
        if self.dump_dir is not None:
            write_dump(graph, self.dump_dir / "00-input.ir", self.store)
        if self.verify_each:
            try:
                self._verify(graph)
            except VerifyError as e:
                raise PassFailure(INPUT, [], None, e) from e
        done: list[str] = []
        for i, p in enumerate(self.passes, start=1):
            # a cheap snapshot (arrays shared) so a failure can show the IR the pass was given;
            # only when asked for (--log=debug), so a failing compile leaves nothing in /tmp otherwise
            before = graph.clone() if self.dump_dir is None and log.isEnabledFor(logging.DEBUG) else None
            t0 = time.perf_counter()
            try:
                changed = bool(p.run(graph, ctx))
                seconds = time.perf_counter() - t0
                if self.verify_each:
                    self._verify(graph)
            except AtcError as e:
                if not isinstance(e, InternalError):
                    raise  # the user's to fix (model too big for memory, ...), with its own exit code
                raise PassFailure(p.name, list(done), self._failure_dump(i, p.name, before, graph), e) from e
            except Exception as e:
                raise PassFailure(p.name, list(done), self._failure_dump(i, p.name, before, graph), e) from e
            self.results.append(PassResult(p.name, seconds, changed))
            ctx.log.debug("pass %s: %.4fs changed=%s", p.name, seconds, changed)
            done.append(p.name)
            if self.dump_dir is not None:
                write_dump(graph, self.dump_dir / f"{i:02d}-{p.name}.ir", self.store)
        return [r.as_dict() for r in self.results]

    def _failure_dump(self, i: int, name: str, before: Graph | None, after: Graph) -> Path | None:
        """The failing pass's input IR (and what it left): beside --dump_ir's dumps, or with
        --log=debug in a fresh ``atcpy-pass-failure-*`` temp directory; otherwise none."""
        if self.dump_dir is None and before is None:
            return None
        if before is None:  # dumps are on: the previous dump is the failing pass's input
            assert self.dump_dir is not None
            prev = sorted(self.dump_dir.glob(f"{i - 1:02d}-*.ir"))
            path = prev[0] if prev else None
            out_dir = self.dump_dir
        else:
            out_dir = Path(tempfile.mkdtemp(prefix="atcpy-pass-failure-"))
            path = None
            try:
                path = write_dump(before, out_dir / f"{i - 1:02d}-before-{name}.ir")
            except Exception:  # noqa: BLE001 - the failure itself matters more than its dump
                path = None
        try:  # the broken IR, best effort (a pass may leave it unprintable)
            write_dump(after, out_dir / f"{i:02d}-{name}.failed.ir", self.store if out_dir == self.dump_dir else None)
        except Exception as e:  # noqa: BLE001
            log.debug("could not dump the IR %s left: %s", name, e)
        return path

    def timing_report(self) -> str:
        return format_timing(self.results, self.verify_seconds)
