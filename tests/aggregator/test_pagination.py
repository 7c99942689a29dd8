"""Cursor pagination over merged lists (pure)."""

from __future__ import annotations

import pytest

from xds_control.aggregator.catalog import MergedList, list_hash
from xds_control.aggregator.pagination import CursorError, encode_cursor, page


def merged(n: int, kind: str = "tools") -> MergedList:
    items = tuple({"name": f"t{i}"} for i in range(n))
    return MergedList(kind, items, {}, list_hash(items))  # type: ignore[arg-type]


def walk(lst: MergedList, size: int) -> list[str]:
    seen, cursor = [], None
    while True:
        items, cursor = page(lst, cursor, size)
        seen += [i["name"] for i in items]
        if cursor is None:
            return seen


def test_pages_cover_the_list_once_in_order() -> None:
    lst = merged(250)
    assert walk(lst, 100) == [f"t{i}" for i in range(250)]
    first, cursor = page(lst, None, 100)
    assert len(first) == 100 and cursor is not None


@pytest.mark.parametrize("n", [0, 1, 99, 100, 101])
def test_edges(n: int) -> None:
    lst = merged(n)
    items, cursor = page(lst, None, 100)
    assert len(items) == min(n, 100)
    assert (cursor is None) == (n <= 100)
    assert walk(lst, 100) == [f"t{i}" for i in range(n)]


def test_a_cursor_of_a_changed_list_is_stale() -> None:
    _, cursor = page(merged(250), None, 100)
    with pytest.raises(CursorError) as info:
        page(merged(251), cursor, 100)
    assert info.value.reason == "stale" and "list again from the start" in str(info.value)


def test_a_cursor_of_another_kind_is_invalid() -> None:
    _, cursor = page(merged(250, "tools"), None, 100)
    with pytest.raises(CursorError, match="belongs to the tools list"):
        page(merged(250, "prompts"), cursor, 100)


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGEgY3Vyc29y", encode_cursor("tools", "x", -1)])
def test_garbage_cursors_are_invalid(cursor: str) -> None:
    with pytest.raises(CursorError) as info:
        page(merged(5), cursor, 100)
    assert info.value.reason in ("invalid", "stale")


def test_an_offset_past_the_end_is_invalid() -> None:
    lst = merged(5)
    with pytest.raises(CursorError, match="invalid cursor"):
        page(lst, encode_cursor("tools", lst.hash, 6), 100)
