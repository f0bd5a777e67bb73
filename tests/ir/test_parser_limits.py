"""Issue 17 (4): IR text with limits.  Hostile IR is a `ParseError` / `VerifyError`
(``atcpy-opt`` exit 2), never a RecursionError, a ZeroDivisionError or a 74 GiB allocation."""

from __future__ import annotations

import pytest

from compiler.opt import main as atcpy_opt
from ir.parser import MAX_DEPTH, MAX_SYNTH_ELEMENTS, ParseError, parse
from ir.verifier import VerifyError, verify

RELU = """graph @g(%x: tensor<4xf32>) -> (tensor<4xf32>) {{
  %y = Relu(%x) {{{attrs}}} : (tensor<4xf32>) -> tensor<4xf32>
  return %y
}}
"""
CONV = """graph @g(%x: tensor<1x1x8x8xf32>) -> (tensor<1x4x8x8xf32>) {
  %w = const() {value = dense_resource<"w"> : tensor<4x1x3x3xf32>} : () -> tensor<4x1x3x3xf32>
  %y = Conv(%x, %w) {strides = [0, 0], pads = [1, 1, 1, 1]} : (tensor<1x1x8x8xf32>, tensor<4x1x3x3xf32>) -> tensor<1x4x8x8xf32>
  return %y
}
"""
HUGE = """graph @g() -> (tensor<100000x100000xf32>) {
  %big = const() {value = dense_resource<"big"> : tensor<100000x100000xf32>} : () -> tensor<100000x100000xf32>
  return %big
}
"""


def _nested(depth: int) -> str:
    return RELU.format(attrs="a = " + "[" * depth + "]" * depth)


def test_deep_attribute_list_is_a_parse_error():
    with pytest.raises(ParseError, match=f"nested deeper than {MAX_DEPTH}"):
        parse(_nested(100_000))


def test_nesting_up_to_the_limit_parses():
    g = parse(_nested(MAX_DEPTH))
    assert g.ops[0].attrs["a"] is not None


def test_brackets_in_strings_and_comments_do_not_count():
    text = RELU.format(attrs='s = "' + "[" * 500 + '"') + "// " + "[" * 500 + "\n"
    assert parse(text).ops[0].attrs["s"] == "[" * 500


def test_huge_synthesized_resource_names_the_value():
    with pytest.raises(ParseError, match=r'dense_resource<"big">.*limited to') as e:
        parse(HUGE, synthesize=True)
    assert str(MAX_SYNTH_ELEMENTS) in str(e.value)


def test_zero_strides_are_a_verifier_error():
    g = parse(CONV, synthesize=True)
    with pytest.raises(VerifyError, match="stride 0"):
        verify(g)


@pytest.mark.parametrize("text", [_nested(100_000), CONV, HUGE], ids=["deep", "strides0", "huge"])
def test_atcpy_opt_exits_2(text, tmp_path, capsys):
    f = tmp_path / "in.ir"
    f.write_text(text)
    for verify_each in ("--verify-each", "--no-verify-each"):
        assert atcpy_opt([str(f), "--passes=canonicalize", verify_each]) == 2
        err = capsys.readouterr().err
        assert err.startswith("atcpy-opt: error: ") and "Traceback" not in err, err
