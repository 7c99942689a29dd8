"""Argument checks against a backend's inputSchema in linear time (aggregator/arguments.py), pure."""

from __future__ import annotations

from typing import Any

import pytest

from xds_control.aggregator.arguments import MAX_CHECKED_VALUES, checkable, checker

EVIL = {
    "type": "object",
    "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}},
    "patternProperties": {"^x_(b+)+$": {"type": "integer"}},
    "additionalProperties": False,
}


def messages(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    validator = checker(schema, "t")
    assert validator is not None
    return [e.message for e in validator.iter_errors(arguments)]


def test_a_backtracking_pattern_is_matched_in_linear_time() -> None:
    # With Python's `re` this would not end (2^5000 steps); the test's timeout would fail it.
    found = messages(EVIL, {"s": "a" * 5000 + "!", "x_" + "b" * 5000 + "!": 1})
    assert len(found) == 2 and "does not match '^(a+)+$'" in found[0]
    assert messages(EVIL, {"s": "aaa", "x_bb": 1}) == []
    assert messages(EVIL, {"x_bb": "no"}) == ["'no' is not of type 'integer'"]


def test_a_pattern_re2_cannot_compile_is_left_to_the_backend() -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "(a)\\1"}}}
    assert messages(schema, {"s": "zz"}) == []
    assert messages(schema, {"s": 5}) == ["5 is not of type 'string'"]


@pytest.mark.parametrize(
    ("items", "unique"),
    [([1, 1.0], False), ([1, True], True), ([{"a": [1]}, {"a": [1.0]}], False), ([[1, 2], [2, 1]], True)],
)
def test_unique_items_is_json_schema_equality(items: list[Any], unique: bool) -> None:
    assert (messages({"type": "array", "uniqueItems": True}, items) == []) is unique  # type: ignore[arg-type]


def test_large_arguments_are_left_to_the_backend() -> None:
    assert checkable({"a": list(range(MAX_CHECKED_VALUES - 2))})
    assert not checkable({"a": list(range(MAX_CHECKED_VALUES))})
    assert not checkable({"a": [{}] * 2_000_000})


def test_a_schema_mixing_unevaluated_and_pattern_properties_is_not_checked_here() -> None:
    schema = {"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False}
    assert checker(schema, "t") is None
