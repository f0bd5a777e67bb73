"""What a newcomer meets first (issue 17, items 5 and 6): --version and defaults in --help,
an ONNX model where an .om belongs, a directory as a model, the timing table printed once,
a report even when the compile fails, an ignored --calibration_data, and outputs that must be
regular files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from compiler.cli import main as atcpy
from runtime.cli import main as atcpy_run
from runtime.om import write_atomic

EXAMPLE = Path(__file__).resolve().parents[2] / "examples"
SOC = "--soc_version=Ascend310P3"




def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("main, prog", [(atcpy, "atcpy"), (atcpy_run, "atcpy-run")])
def test_version(main, prog, capsys) -> None:
    from runtime.cli import package_version

    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0
    version = package_version()
    assert version and version != "unknown"
    assert capsys.readouterr().out.strip() == f"{prog} {version}"


def test_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        atcpy(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: force_fp32)" in out and "(default: 128)" in out and "(default: 0)" in out  # --mode
    assert "(default: None)" not in out and "(default: False)" not in out
    with pytest.raises(SystemExit):
        atcpy_run(["--help"])
    assert "(default: 32)" in " ".join(capsys.readouterr().out.split())


def test_onnx_given_as_om(model, tmp_path, capsys) -> None:
    for argv in (["--mode=6", f"--om={model}"], ["--mode=1", f"--om={model}", f"--json={tmp_path / 'x.json'}"]):
        assert atcpy(argv) == 4
        line = _err(capsys)
        assert "this is an ONNX model" in line and f"atcpy --model={model}" in line and "magic" not in line
    renamed = tmp_path / "model.om"  # recognised by its bytes, not only by its name
    renamed.write_bytes(model.read_bytes())
    assert atcpy_run([f"--model={renamed}"]) == 4
    assert "this is an ONNX model" in _err(capsys)


def test_directory_as_model(tmp_path, capsys) -> None:
    assert atcpy([f"--model={tmp_path}", SOC, f"--output={tmp_path / 'x'}"]) == 2
    line = _err(capsys)
    assert "is a directory" in line and "no such file" not in line
    assert atcpy_run([f"--model={tmp_path}"]) == 2
    assert "is a directory" in _err(capsys)


def test_pass_timing_printed_once(model, tmp_path, capsys, caplog) -> None:
    logger = logging.getLogger("atcpy")
    level = logger.level
    try:
        with caplog.at_level(logging.INFO, logger="atcpy"):
            assert atcpy([f"--model={model}", SOC, f"--output={tmp_path / 'x'}", "--pass_timing", "--log=info"]) == 0
    finally:
        logger.setLevel(level)
    captured = capsys.readouterr()
    assert captured.out.count("Pass execution timing report") == 1
    assert "Pass execution timing report" not in captured.err + caplog.text


def test_failed_compile_still_writes_report(model, tmp_path, capsys) -> None:
    report = tmp_path / "r.json"
    assert atcpy([f"--model={model}", SOC, f"--output={tmp_path / 'x'}", "--mem_limit=64K",
                  f"--report={report}"]) == 3
    data = json.loads(report.read_text())
    assert data["status"] == "failed" and "65536" in data["error"] and data["problems"]
    assert not (tmp_path / "x.om").exists()
    # --mode=3 writes its result too, problems or not
    assert atcpy(["--mode=3", f"--model={model}", SOC, "--mem_limit=64K", f"--report={report}"]) == 3
    data = json.loads(report.read_text())
    assert data["status"] == "failed" and any("65536" in p for p in data["problems"])
    assert "report" in _err(capsys)
    assert atcpy(["--mode=3", f"--model={model}", SOC, f"--report={report}"]) == 0
    data = json.loads(report.read_text())
    assert data["status"] == "ok" and data["problems"] == [] and "memory" in data
    bad = tmp_path / "bad.onnx"  # a model atcpy cannot read at all: exit 3, and the report says why
    bad.write_bytes(b"\x08\x07not a model")
    for mode in ("--mode=0", "--mode=3"):
        report.unlink()
        assert atcpy([mode, f"--model={bad}", SOC, f"--output={tmp_path / 'b'}", f"--report={report}"]) == 3
        assert json.loads(report.read_text())["status"] == "failed"


def test_calibration_data_ignored_warns(model, tmp_path, capsys) -> None:
    calib = tmp_path / "c.npz"
    calib.write_bytes(b"")  # never read: that is the point
    assert atcpy([f"--model={model}", SOC, f"--output={tmp_path / 'x'}", f"--calibration_data={calib}"]) == 0
    err = capsys.readouterr().err
    assert "--calibration_data is ignored" in err and "allow_quantize" in err


def test_outputs_must_be_regular_files(model, tmp_path, capsys) -> None:
    d = tmp_path / "d"
    d.mkdir()
    fifo = tmp_path / "f.om"
    os.mkfifo(fifo)  # writing would block until someone reads
    good = f"--output={tmp_path / 'x'}"
    cases = [(f"--output={d}", str(d), "is a directory"), (f"--output={d}/", str(d), "is a directory"),
             (f"--output={tmp_path / 'f'}", str(fifo), "not a regular file"),
             (f"--report={d}", str(d), "is a directory"), ("--report=/dev/null", "/dev/null", "not a regular file"),
             (f"--report={fifo}", str(fifo), "not a regular file"),
             (f"--report={model}/r.json", str(model), "Not a directory")]
    for flag, named, what in cases:
        argv = [f"--model={model}", SOC, flag] + ([] if flag.startswith("--output") else [good])
        assert atcpy(argv) == 2, flag
        line = _err(capsys)
        assert "usage error" in line and named in line and what in line, line
    assert not (tmp_path / "x.om").exists()


def test_json_output_and_mem_limit_checked(model, tmp_path, capsys) -> None:
    assert atcpy([f"--model={model}", SOC, f"--output={tmp_path / 'x'}"]) == 0
    assert atcpy(["--mode=1", f"--om={tmp_path / 'x.om'}", f"--json={tmp_path}"]) == 2
    assert "is a directory" in _err(capsys)
    assert atcpy(["--mode=1", f"--om={tmp_path / 'x.om'}", "--json=/dev/null"]) == 2
    assert "/dev/null" in _err(capsys)
    for bad in ("0", "-5M"):
        assert atcpy([f"--model={model}", SOC, f"--output={tmp_path / 'y'}", f"--mem_limit={bad}"]) == 2
        assert "must be positive" in _err(capsys)


def test_run_reads_only_regular_files(model, tmp_path, capsys) -> None:
    assert atcpy([f"--model={model}", SOC, f"--output={tmp_path / 'x'}"]) == 0
    assert atcpy_run(["--model=/dev/null"]) == 2
    assert "not a regular file" in _err(capsys)
    assert atcpy_run([f"--model={tmp_path / 'x.om'}", f"--input={tmp_path}"]) == 5
    assert "is a directory" in _err(capsys)
    fifo = tmp_path / "in.npy"
    os.mkfifo(fifo)  # opening it would block for ever
    assert atcpy_run([f"--model={tmp_path / 'x.om'}", f"--input={fifo}"]) == 5
    assert "not a regular file" in _err(capsys)


def test_write_atomic_sweeps_stale_temps_and_cleans_up(tmp_path, monkeypatch) -> None:
    out = tmp_path / "m.om"
    dead = tmp_path / f".m.om.{2**31 - 2}.abc.tmp"  # a pid no process has: a write that was killed
    dead.write_bytes(b"half")
    legacy = tmp_path / ".m.om.xyz.tmp"  # the old name form, an hour old
    legacy.write_bytes(b"half")
    os.utime(legacy, (0, 0))
    live = tmp_path / f".m.om.{os.getpid()}.def.tmp"  # a write in progress in this process: kept
    live.write_bytes(b"busy")
    other = tmp_path / ".n.om.1.tmp"  # another file's: kept
    other.write_bytes(b"x")
    write_atomic(out, b"data")
    assert out.read_bytes() == b"data"
    assert not dead.exists() and not legacy.exists() and live.exists() and other.exists()
    live.unlink()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_atomic(out, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".n.om.1.tmp", "m.om"]
    assert out.read_bytes() == b"data"


@pytest.fixture()
def breaking_pass():
    from dataclasses import dataclass
    from typing import ClassVar

    from passes import PASSES, Pass

    @dataclass
    class _Breaker(Pass):
        name: ClassVar[str] = "test-newcomer-breaker"

        def run(self, graph, ctx) -> bool:
            raise RuntimeError("boom")

    PASSES[_Breaker.name] = _Breaker
    yield _Breaker.name
    del PASSES[_Breaker.name]


def test_pass_failure_dumps_only_when_asked(model, tmp_path, capsys, monkeypatch, breaking_pass) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where an atcpy-pass-failure-* dump would go
    logger = logging.getLogger("atcpy")
    level = logger.level
    argv = [f"--model={model}", SOC, f"--output={tmp_path / 'x'}", f"--passes=canonicalize,{breaking_pass}"]
    try:
        assert atcpy(argv) == 1
        line = _err(capsys)
        assert f"pass '{breaking_pass}'" in line and "rerun with --dump_ir=DIR or --log=debug" in line
        assert not list(tmp_path.glob("atcpy-pass-failure-*"))
        assert atcpy([*argv, "--log=debug"]) == 1
        line = _err(capsys)
        (dump_dir,) = tmp_path.glob("atcpy-pass-failure-*")
        assert f"its input IR is in {dump_dir}" in line and (dump_dir / f"02-{breaking_pass}.failed.ir").exists()
        assert atcpy([*argv, f"--dump_ir={tmp_path / 'ir'}"]) == 1
        assert f"its input IR is in {tmp_path / 'ir' / '01-canonicalize.ir'}" in _err(capsys)
    finally:
        logger.setLevel(level)
