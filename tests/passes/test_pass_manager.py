"""The pass manager: pipeline text, dumps that reload exactly, timing,
failures that name the pass, and the atcpy-opt front end."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest

from compiler.opt import main as opt_main
from compiler.opt import run_opt
from compiler.pipeline import DEFAULT_PIPELINES, default_pipeline, format_timing, run_pipeline
from ir.core import Graph
from ir.printer import print_graph
from ir.types import DType, TensorType
from passes import PASSES, Pass, PassContext
from passes.manager import PassFailure, PassManager, PipelineError, load_dump, parse_pipeline


def _mlp() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.f32, (2, 40)))
    w = g.const(rng.standard_normal((30, 40)).astype(np.float32), "w")  # > 16 elements: a resource
    b = g.const(rng.standard_normal(30).astype(np.float32), "b")
    h = g.add_op("Gemm", [x, w, b], {"transB": 1}).result
    g.outputs = [g.add_op("Relu", [h]).result]
    return g


# A test-only pass that breaks the IR (registered under a name no real pass uses).
@dataclass
class _Breaker(Pass):
    name: ClassVar[str] = "test-breaker"
    how: str = "raise"
    sizes: list[int] = field(default_factory=list)
    ratio: float = 0.0

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if self.how == "raise":
            raise RuntimeError("boom")
        op = next(o for o in graph.ops if o.kind != "const")
        op.results[0].type = TensorType(DType.f16, op.results[0].type.shape)  # wrong on purpose
        return True


@pytest.fixture
def breaker():
    PASSES[_Breaker.name] = _Breaker
    yield
    del PASSES[_Breaker.name]


def test_options_are_converted_to_field_types(breaker):
    (p,) = parse_pipeline("test-breaker{how=verify sizes=[1,2,3], ratio=0.5}")
    assert p.how == "verify" and p.sizes == [1, 2, 3] and p.ratio == 0.5
    with pytest.raises(PipelineError, match=r"'x' is not a number"):
        parse_pipeline("test-breaker{ratio=x}")
    with pytest.raises(PipelineError, match=r"its options: how: str, sizes: list\[int\], ratio: float"):
        parse_pipeline("test-breaker{size=1}")


def test_results_and_timing_table():
    g = _mlp()
    pm = PassManager.parse("canonicalize,fuse", verify_each=True)
    res = pm.run(g, PassContext())
    assert [r["name"] for r in res] == ["canonicalize", "fuse"]
    assert all(r["changed"] for r in res) and all(r["seconds"] >= 0 for r in res)
    table = pm.timing_report()
    assert "canonicalize" in table and "fuse" in table and "Total" in table and "(A) verifier" in table
    assert "100.0%" in format_timing(res)
    # nothing left to do: a second run changes nothing
    assert not any(r["changed"] for r in PassManager.parse("canonicalize,fuse").run(g))


def test_dumps_reload_exactly(tmp_path):
    g = _mlp()
    run_pipeline(g, "canonicalize,fuse", PassContext(), dump_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*.ir"))
    assert names == ["00-input.ir", "01-canonicalize.ir", "02-fuse.ir"]
    assert (tmp_path / "01-canonicalize.npz").exists()
    back = load_dump(tmp_path / "02-fuse.ir")
    assert print_graph(back) == print_graph(g)
    w_after = next(op for op in g.ops if op.kind == "const" and op.result.name == "w_t").attrs["value"]
    w_back = next(op for op in back.ops if op.kind == "const" and op.result.name == "w_t").attrs["value"]
    np.testing.assert_array_equal(w_after, w_back)
    # the input dump holds the original weights, and the text alone parses with synthesized ones
    orig = load_dump(tmp_path / "00-input.ir")
    np.testing.assert_array_equal(orig.value("w").producer.attrs["value"], _mlp().value("w").producer.attrs["value"])
    assert "fused.matmul_add_relu" in run_opt((tmp_path / "00-input.ir").read_text(), "canonicalize,fuse")


def test_failing_pass_names_itself_and_dumps_its_input(breaker, caplog):
    g = _mlp()
    with caplog.at_level(logging.DEBUG, logger="atcpy"), pytest.raises(PassFailure) as ei:  # dumps: --log=debug
        run_pipeline(g, "canonicalize,test-breaker,fuse", PassContext())
    e = ei.value
    msg = str(e)
    assert e.pass_name == "test-breaker" and e.before == ["canonicalize"]
    assert "pass 'test-breaker' (after canonicalize) failed: RuntimeError: boom" in msg
    assert e.dump_path is not None and str(e.dump_path) in msg
    dumped = load_dump(e.dump_path)
    assert dumped.count("MatMul") == 1 and dumped.count("Gemm") == 0  # the IR canonicalize left


def test_verify_failure_after_pass(breaker, tmp_path):
    g = _mlp()
    with pytest.raises(PassFailure, match=r"pass 'test-breaker' \(after canonicalize, fuse\) left IR that does not"):
        run_pipeline(g, "canonicalize,fuse,test-breaker{how=verify}", PassContext(), verify_each=True,
                     dump_dir=tmp_path)
    # with dumps on, the failing pass's input is the previous dump
    assert (tmp_path / "02-fuse.ir").exists() and (tmp_path / "03-test-breaker.failed.ir").exists()
    # without verification the broken pass goes unnoticed: verify_each is what catches it
    run_pipeline(_mlp(), "test-breaker{how=verify}", PassContext())


def test_default_pipelines_only_hold_registered_passes():
    assert set(DEFAULT_PIPELINES) == {"force_fp32", "must_keep_origin_dtype", "force_fp16",
                                      "allow_fp32_to_fp16", "allow_quantize"}
    for mode in DEFAULT_PIPELINES:
        text = default_pipeline(mode)
        assert text.startswith("canonicalize,cse,fuse")
        parse_pipeline(text)  # every name registered, every option valid
    assert "quantize" in DEFAULT_PIPELINES["allow_quantize"]
    assert "quantize" not in DEFAULT_PIPELINES["force_fp32"]
    assert "cast-precision" in DEFAULT_PIPELINES["force_fp16"]
    assert "cast-precision" not in DEFAULT_PIPELINES["must_keep_origin_dtype"]
    with pytest.raises(Exception, match="precision_mode"):
        default_pipeline("fp8")


def test_a_default_pipeline_naming_an_unregistered_pass_is_an_internal_error(monkeypatch):
    from compiler import pipeline
    from ir.errors import InternalError

    monkeypatch.setitem(pipeline.DEFAULT_PIPELINES, "force_fp32", "canonicalize,no-such-pass,place")
    with pytest.raises(InternalError, match="no-such-pass"):
        default_pipeline("force_fp32")  # never silently dropped


def test_opt_cli(tmp_path, capsys, monkeypatch):
    src = tmp_path / "m.ir"
    src.write_text(print_graph(_mlp()))
    assert opt_main([str(src), "--passes=canonicalize,fuse"]) == 0
    out = capsys.readouterr().out
    assert "fused.matmul_add_relu" in out and "Gemm" not in out
    monkeypatch.setattr("sys.stdin", io.StringIO(src.read_text()))
    assert opt_main(["--passes", "fuse"]) == 0
    assert "Gemm(" in capsys.readouterr().out
    assert opt_main([str(src), "--passes=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atcpy-opt: error: unknown pass 'nope'")
    src.write_text("graph @broken(")
    assert opt_main([str(src)]) == 2
