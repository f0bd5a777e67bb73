"""SoC data files: loading, unknown names, and every number sourced or marked estimated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ir.errors import UsageError
from passes.target.soc import DEFAULT_SOC, SUPPORTED, Soc, iter_facts, load_soc

SOC_DIR = Path(__file__).resolve().parents[2] / "passes" / "target" / "soc"


def test_supported_socs_load():
    assert {"Ascend310P3", "Ascend310", "Ascend910B"} <= set(SUPPORTED)
    for name in SUPPORTED:
        soc = load_soc(name)
        assert isinstance(soc, Soc) and soc.name == name
        assert soc.ai_cores > 0 and soc.clock_hz > 0 and soc.ddr_bandwidth > 0
        assert soc.max_cube_block == 256
        assert soc.cube_fractal["f16"] == (16, 16, 16)
        assert soc.cube_fractal["i8"] == (16, 32, 16)
        assert soc.l0a_bytes < soc.l1_bytes and soc.ub_bytes > 0


def test_default_is_310p3_with_seed_memory():
    soc = load_soc(None)
    assert soc.name == DEFAULT_SOC == "Ascend310P3"
    assert soc.ddr_bytes == 8 << 30
    assert soc.ddr_bandwidth == 68e9
    assert soc.aicpu_slowdown == 50


def test_soc_is_frozen():
    soc = load_soc("Ascend310P3")
    with pytest.raises(AttributeError):
        soc.ai_cores = 1  # type: ignore[misc]


def test_unknown_soc_is_a_usage_error_listing_supported():
    with pytest.raises(UsageError) as e:
        load_soc("Ascend999")
    msg = str(e.value)
    assert "Ascend999" in msg
    for name in SUPPORTED:
        assert name in msg
    assert e.value.exit_code == 2


@pytest.mark.parametrize("name", SUPPORTED)
def test_every_number_is_sourced_or_estimated(name):
    raw = json.loads((SOC_DIR / f"{name}.json").read_text())
    facts = list(iter_facts(raw))
    assert len(facts) > 15
    for path, fact in facts:
        assert isinstance(fact, dict), f"{name}: bare number at {path}: {fact!r}"
        src = fact.get("source")
        est = fact.get("estimated") is True
        assert bool(src) != est, f"{name}: {path} must have exactly one of a source or estimated: true"
        if est:
            assert fact.get("note"), f"{name}: estimate {path} needs a note saying why"


def test_iter_facts_flags_bare_numbers():
    bad = {"a": {"value": 1, "source": "x"}, "b": 3}
    assert ("b", 3) in list(iter_facts(bad))


def test_910b_out_scales_310p3():
    a, b = load_soc("Ascend310P3"), load_soc("Ascend910B")
    assert b.ai_cores > a.ai_cores and b.ddr_bandwidth > a.ddr_bandwidth
    assert b.cube_supports("f32") and not a.cube_supports("f32")
