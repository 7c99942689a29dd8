"""Catalog bounds and name screening, with a fake `request` (the fetch is independent of the wire)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xds_control.admin.convert import catalog_to_json_text
from xds_control.config import HealthConfig
from xds_control.errors import ProbeError
from xds_control.health import metrics
from xds_control.health.catalog import MAX_TEXT_CHARS, fetch_catalog
from xds_control.health.classify import Category

CAPS = {"tools": {}, "prompts": {}, "resources": {}}


def pages(make: Callable[[str, int], dict[str, Any]]) -> Any:
    """A request that answers page n of each method with `make(method, n)`."""
    counts: dict[str, int] = {}

    async def request(method: str, params: dict[str, Any]) -> dict[str, Any]:
        counts[method] = counts.get(method, 0) + 1
        return make(method, counts[method])

    return request, counts


def one_page(tools: list[dict[str, Any]], **lists: list[dict[str, Any]]) -> Any:
    keys = {"tools/list": "tools", "prompts/list": "prompts", "resources/list": "resources"}

    def make(method: str, n: int) -> dict[str, Any]:
        key = keys.get(method, "resourceTemplates")
        return {key: tools if key == "tools" else lists.get(key, [])}

    return pages(make)[0]


async def test_pages_forever_with_fresh_cursors_stop_at_the_page_cap() -> None:
    request, counts = pages(lambda method, n: {"tools": [{"name": f"t{n}"}], "nextCursor": f"c{n}"})
    with pytest.raises(ProbeError) as info:
        await fetch_catalog(request, {"tools": {}}, "2025-11-25", HealthConfig(max_catalog_pages=7))
    assert info.value.category == Category.CATALOG_TOO_LARGE and counts["tools/list"] == 7


async def test_bytes_across_pages_are_bounded() -> None:
    big = "x" * 4000
    request, counts = pages(
        lambda method, n: {
            "tools": [{"name": f"t{n}_{i}", "description": big} for i in range(10)],
            "nextCursor": str(n),
        }
    )
    with pytest.raises(ProbeError) as info:
        await fetch_catalog(request, {"tools": {}}, "", HealthConfig(max_catalog_bytes=100_000))
    assert info.value.category == Category.CATALOG_TOO_LARGE and "bytes" in str(info.value)
    assert counts["tools/list"] <= 3  # stopped as soon as the total passed the bound


async def test_items_across_lists_are_bounded() -> None:
    request = one_page([{"name": f"t{i}"} for i in range(60)], prompts=[{"name": f"p{i}"} for i in range(60)])
    with pytest.raises(ProbeError, match="items"):
        await fetch_catalog(request, CAPS, "", HealthConfig(max_catalog_items=100))
    catalog = await fetch_catalog(request, CAPS, "", HealthConfig(max_catalog_items=120))
    assert len(catalog.tools) == 60 and len(catalog.prompts) == 60


async def test_names_breaking_the_tool_name_rule_are_dropped_counted_and_logged_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = ["nul\x00", "esc\x1b[31m", "new\nline", "rtl\u202eevil", "n" * 10_000, "", "with space", "slash/name", 7]
    good = ["get_forecast", "admin.tools.list", "DATA-EXPORT_v2", "a" * 128]
    tools = [{"name": n, "inputSchema": {"type": "object"}} for n in [*bad, *good]]
    resources = [
        {"uri": "file:///ok.txt", "name": "ok"},
        {"uri": "file:///evil\x1b.txt", "name": "x"},
        {"uri": "file:///has space", "name": "x"},
        {"uri": "u" * 5000, "name": "x"},
        {"uri": "file:///named", "name": "bidi\u202e"},
    ]
    request = one_page(tools, prompts=[{"name": "greet"}, {"name": "bad\x07"}], resources=resources)
    before = metrics.CATALOG_DROPPED.labels("b", "tools", "unsafe_characters")._value.get()
    caplog.set_level(logging.WARNING)
    catalog = await fetch_catalog(request, CAPS, "", backend="b")
    assert [t["name"] for t in catalog.tools] == good
    assert [p["name"] for p in catalog.prompts] == ["greet"]
    assert [r["uri"] for r in catalog.resources] == ["file:///ok.txt"]
    assert metrics.CATALOG_DROPPED.labels("b", "tools", "unsafe_characters")._value.get() - before == 4
    [line] = [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "catalog_items_dropped"]
    assert "14 catalog items left out" in line and "\x00" not in line and len(line) < 400


async def test_long_descriptions_are_cut() -> None:
    request = one_page([{"name": "t", "description": "d" * (MAX_TEXT_CHARS * 3), "title": "short"}])
    catalog = await fetch_catalog(request, {"tools": {}}, "")
    assert len(catalog.tools[0]["description"]) == MAX_TEXT_CHARS and catalog.tools[0]["title"] == "short"


items = st.fixed_dictionaries(
    {"name": st.text(max_size=40)},
    optional={
        "description": st.text(max_size=3000),
        "inputSchema": st.dictionaries(st.text(max_size=5), st.text(max_size=50), max_size=5),
    },
)


@settings(max_examples=60, deadline=None)
@given(page_list=st.lists(st.lists(items, max_size=30), min_size=1, max_size=6), limit=st.integers(2_000, 60_000))
async def test_a_fetched_catalog_never_encodes_larger_than_its_bound(
    page_list: list[list[dict[str, Any]]], limit: int
) -> None:
    def make(method: str, n: int) -> dict[str, Any]:
        answer: dict[str, Any] = {"tools": page_list[n - 1]}
        if n < len(page_list):
            answer["nextCursor"] = f"c{n}"
        return answer

    request, _ = pages(make)
    try:
        catalog = await fetch_catalog(request, {"tools": {}}, "2025-11-25", HealthConfig(max_catalog_bytes=limit))
    except ProbeError as exc:
        assert exc.category == Category.CATALOG_TOO_LARGE
        return
    assert len(catalog_to_json_text(catalog)) <= limit
    assert all(isinstance(t["name"], str) and t["name"].isascii() and t["name"].strip() for t in catalog.tools)
