"""bench/perplexity.py's machinery on a tiny configuration (issue 16), so the bench
cannot rot: train a one-layer byte LLaMA for a few steps on the stdlib sources,
export it with optimum, evaluate atcpy and onnxruntime through the KV cache, print
the table, the generation check and the verdicts.  Nothing is downloaded."""

from __future__ import annotations

import math
import re

import pytest

from bench import perplexity as bench
from bench._bytellm import TrainConfig, load_corpus
from bench._ppl_engines import OrtSpec

TINY = TrainConfig(layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64, context=64, steps=20, batch=4,
                   warmup=5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    args = bench.parse(["--dir", str(tmp_path_factory.mktemp("ppl")), "--windows", "2", "--length", "48",
                        "--prefill", "16", "--chunk", "16", "--prompt", "16", "--new", "8"])
    keep = ("fp32", "W8A16 +kv8", "W4A16 g32 RTN")
    atc = [s for s in bench.atc_specs() if s.name in keep]
    atc.append(bench.AtcSpec("broken", "w3", {"quant_type": "W3A16"}))  # a failing variant is a row
    printed: list[str] = []
    rows, lines = bench.run(args, TINY, atc, [None, OrtSpec("rtn", 4, 32, True)], out=printed.append)
    return {(r.engine, r.name): r for r in rows}, lines, "\n".join(printed)


def test_the_corpus_split_is_fixed_and_disjoint():
    a, b = load_corpus(), load_corpus()
    assert (a.train == b.train).all() and (a.heldout == b.heldout).all()
    assert a.heldout_files > 0 and a.train_files > 4 * a.heldout_files
    assert a.train.max() <= 256 and a.heldout.max() <= 256  # bytes and BOS


def test_every_engine_agrees_in_fp32(tiny_run):
    rows, _, _ = tiny_run
    ref = rows["transformers", "fp32"].ppl
    assert ref is not None and math.isfinite(ref)
    for engine in ("atcpy", "onnxruntime"):
        assert rows[engine, "fp32"].ppl == pytest.approx(ref, rel=1e-4), engine
        assert rows[engine, "fp32"].matrix_bytes == rows["atcpy", "fp32"].matrix_bytes


def test_quantized_rows_have_a_perplexity_and_fewer_bytes(tiny_run):
    rows, _, _ = tiny_run
    fp32 = rows["atcpy", "fp32"]
    for key in (("atcpy", "W4A16 g32 RTN"), ("atcpy", "W8A16 +kv8"), ("onnxruntime", "RTN sym")):
        r = rows[key]
        assert r.error is None and math.isfinite(r.ppl) and not r.note, key
        assert r.matrix_bytes < 0.5 * fp32.matrix_bytes, key


def test_the_report_has_the_table_the_verdicts_and_the_generation_check(tiny_run):
    rows, lines, text = tiny_run
    assert rows["atcpy", "broken"].error and "broken" in text and "failed: UsageError" in text
    assert "issue 16, Done means:" in text
    same = re.search(r"transformers generate \(fp32\): ([\d.]+)%", text)
    assert same and float(same.group(1)) >= 90.0
    assert len(lines) == 8 and all(line[:4] in ("PASS", "FAIL") for line in lines)
