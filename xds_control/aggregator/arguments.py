"""Checking a call's arguments against its tool's inputSchema, in time linear in the arguments and the schema.

Both are untrusted: the schema is a backend's, the arguments a client's. Two
of jsonschema's keywords can take time far beyond that: a regex run by
Python's backtracking `re` (`"pattern": "^(a+)+$"` against 29 `a` and a `!`
takes seconds, doubling with each character) and `uniqueItems`, which falls
back to comparing every pair of items. So, in the validator `checker` builds:

* every regex of the schema (`pattern`, the keys of `patternProperties`,
  which `additionalProperties` consults too) runs on google-re2, whose
  matching is linear in its input. A pattern re2 cannot compile
  (backreferences, lookaround) is not checked here: that keyword passes and
  the backend, which owns its schema, checks it. A schema that combines
  `unevaluatedProperties` with `patternProperties` is not checked at all (the
  evaluation jsonschema does for it runs `re` again).
* `uniqueItems` compares the items' canonical forms in a set: linear.
* arguments of more than `MAX_CHECKED_VALUES` JSON values (counted with an
  early stop) are not checked here but left to the backend: jsonschema spends
  microseconds of Python per value, and a 4 MiB body holds a million of them.

Why not run jsonschema as it is, off the event loop, under a deadline: `re`
holds the GIL while it matches, so a thread would freeze the loop all the
same, and a process per call would cost more than the call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

import re2
from jsonschema import SchemaError, ValidationError, validators

log = logging.getLogger(__name__)

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a pattern re2 refuses is an expected case here, not worth a line on stderr
_MAX_PATTERNS = 1024  # compiled patterns kept per validator (a schema rarely has more than a few)
MAX_CHECKED_VALUES = 2_000


def checkable(arguments: Any, limit: int = MAX_CHECKED_VALUES) -> bool:
    """Are there at most `limit` JSON values in `arguments` (O(limit) at most)?"""
    stack, seen = [arguments], 0
    while stack:
        seen += 1
        if seen > limit:
            return False
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(islice(node.values(), limit))
        elif isinstance(node, list):
            stack.extend(islice(node, limit))
    return True


class _Patterns:
    """A schema's patterns compiled by re2, once each; None for one re2 cannot compile."""

    def __init__(self) -> None:
        self._compiled: dict[str, Any] = {}

    def get(self, pattern: str) -> Any:
        if pattern not in self._compiled:
            if len(self._compiled) >= _MAX_PATTERNS:
                self._compiled.clear()
            try:
                self._compiled[pattern] = re2.compile(pattern, _OPTIONS)
            except (re2.error, TypeError, ValueError):
                self._compiled[pattern] = None
        return self._compiled[pattern]

    def matches(self, pattern: str, text: str) -> bool:
        """Does `text` match; True when the pattern cannot be checked here (left to the backend)."""
        compiled = self.get(pattern)
        return compiled is None or compiled.search(text) is not None


def _pattern(patterns: _Patterns) -> Any:
    def pattern(validator: Any, patrn: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if isinstance(patrn, str) and validator.is_type(instance, "string") and not patterns.matches(patrn, instance):
            yield ValidationError(f"{_short(instance)} does not match {_short(patrn)}")

    return pattern


def _pattern_properties(patterns: _Patterns) -> Any:
    def pattern_properties(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object") or not isinstance(value, Mapping):
            return
        for patrn, subschema in value.items():
            if patterns.get(patrn) is None:
                continue
            for key, item in instance.items():
                if patterns.matches(patrn, key):
                    yield from validator.descend(item, subschema, path=key, schema_path=patrn)

    return pattern_properties


def _additional_properties(patterns: _Patterns) -> Any:
    def additional_properties(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        properties = schema.get("properties", {})
        keyed = [p for p in schema.get("patternProperties", {}) if isinstance(p, str)]
        extras = [key for key in instance if key not in properties and not any(patterns.matches(p, key) for p in keyed)]
        if validator.is_type(value, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], value, path=extra)
        elif value is False and extras:
            shown = ", ".join(_short(e) for e in sorted(extras, key=str)[:5])
            verb = "was" if len(extras) == 1 else "were"
            if keyed:
                yield ValidationError(f"{shown} do not match any of the regexes: {', '.join(map(_short, keyed))}")
            else:
                yield ValidationError(f"Additional properties are not allowed ({shown} {verb} unexpected)")

    return additional_properties


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _canonical(value: Any) -> Any:
    """A hashable form under which two JSON values are equal exactly when JSON Schema calls them equal."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", int(value) if isinstance(value, float) and value.is_integer() else value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("other", repr(value))


def _unique_items(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if value and validator.is_type(instance, "array"):
        seen = {_canonical(item) for item in instance}
        if len(seen) != len(instance):
            yield ValidationError("the array has non-unique elements")


def _mixes_unevaluated_and_patterns(schema: Any, budget: list[int]) -> bool:
    """Does the schema use `unevaluatedProperties` and `patternProperties` (anywhere, within a walk budget)?"""
    found: set[str] = set()
    stack = [schema]
    while stack and budget[0] > 0:
        node = stack.pop()
        budget[0] -= 1
        if isinstance(node, Mapping):
            found.update(k for k in ("unevaluatedProperties", "patternProperties") if k in node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return len(found) == 2 or budget[0] <= 0


def checker(schema: Mapping[str, Any], tool: str) -> Any:
    """A validator for `schema` with the linear-time keywords above, or None when it cannot be checked here
    (not a valid JSON Schema, or one of the cases left to the backend)."""
    schema = dict(schema)
    try:
        base = validators.validator_for(schema)
        base.check_schema(schema)
    except SchemaError:
        log.warning("a tool's inputSchema is not a valid JSON Schema; arguments go unchecked", extra={"tool": tool})
        return None
    if _mixes_unevaluated_and_patterns(schema, [100_000]):
        log.warning("a tool's inputSchema is left to its backend to check", extra={"tool": tool})
        return None
    patterns = _Patterns()
    keywords = {
        "pattern": _pattern(patterns),
        "patternProperties": _pattern_properties(patterns),
        "additionalProperties": _additional_properties(patterns),
        "uniqueItems": _unique_items,
    }
    linear = validators.extend(base, {k: v for k, v in keywords.items() if k in base.VALIDATORS})
    return linear(schema)
