"""List pages kept until the merged catalog changes (aggregator/list_cache.py): real demo backends, the
aggregator in process, real SDK clients of both families and raw JSON-RPC."""

from __future__ import annotations

from typing import Any

import pytest

from tests.aggregator.conftest import Fleet, Running, tool_names
from tests.aggregator.support import FAMILIES, MODERN, MODERN_ENVELOPE, MODERN_HEADERS, dump, mcp_client, post_jsonrpc
from xds_control.aggregator.list_cache import KeptPages, ListPageCache
from xds_control.view import BackendState

pytestmark = pytest.mark.integration

ENVELOPE = MODERN_ENVELOPE


def cache_of(running: Running) -> ListPageCache:
    (cache,) = [m for m in running.aggregator.server.middleware if isinstance(m, ListPageCache)]
    return cache


def kept_hits(running: Running) -> int:
    """Pages answered from what is kept: by the SDK's middleware, or (plain modern requests) by the fast path."""
    assert running.aggregator.fast_calls is not None
    return cache_of(running).hits + running.aggregator.fast_calls.lists.pages.hits


async def raw_list(url: str, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return await post_jsonrpc(
        url, {"jsonrpc": "2.0", "id": 3, "method": method, "params": params}, {**MODERN_HEADERS, "mcp-method": method}
    )


@pytest.mark.parametrize("mode", FAMILIES)
async def test_a_repeated_list_is_served_from_the_cache_as_the_sdk_answered_it(
    serve: Any, fleet: Fleet, mode: str
) -> None:
    async with serve([fleet.entry("weather"), fleet.entry("many")]) as running:
        async with mcp_client(running.url, mode) as client:
            first = await client.list_tools()
            hits = kept_hits(running)
            second = await client.list_tools()
            assert kept_hits(running) == hits + 1
            assert dump(second) == dump(first)
            next_first = await client.list_tools(cursor=first.next_cursor)
            next_second = await client.list_tools(cursor=first.next_cursor)
            assert kept_hits(running) == hits + 2  # each page has its own entry
            assert dump(next_second) == dump(next_first) != dump(first)
            for lister in (client.list_prompts, client.list_resources):
                assert dump(await lister()) == dump(await lister())


@pytest.mark.parametrize("mode", FAMILIES)
async def test_a_view_change_is_listed_at_once(serve: Any, fleet: Fleet, mode: str) -> None:
    async with serve([fleet.entry("weather"), fleet.entry("alpha")], conflict_resolution="priority") as running:
        async with mcp_client(running.url, mode) as client:
            both = tool_names(await client.list_tools())
            assert tool_names(await client.list_tools()) == both  # now kept
            await running.set_state("weather", BackendState.UNHEALTHY)
            without = await client.list_tools()
            assert set(tool_names(without)) < set(both)
            assert without.meta is not None and without.meta["xds-control/unavailable"][0]["backend"] == "weather"
            await running.set_state("weather", BackendState.HEALTHY)
            assert tool_names(await client.list_tools()) == both


async def test_params_are_still_checked_and_errors_never_kept(serve: Any, fleet: Fleet) -> None:
    # The same cache key as a good request (method, version, no cursor), with params the SDK rejects.
    bad_params = {"_meta": {**ENVELOPE, "progressToken": {"not": "a token"}}}
    async with serve([fleet.entry("weather")]) as running:
        _, uncached = await raw_list(running.url, "tools/list", bad_params)
        assert uncached["error"]["code"] == -32602, uncached

        status, good = await raw_list(running.url, "tools/list", {"_meta": ENVELOPE})
        assert status == 200 and "tools" in good["result"]
        hits = kept_hits(running)
        _, again = await raw_list(running.url, "tools/list", {"_meta": ENVELOPE})
        assert again["result"] == good["result"] and kept_hits(running) == hits + 1

        _, cached = await raw_list(running.url, "tools/list", bad_params)
        assert cached["error"] == uncached["error"]
        for _ in range(2):  # a stale cursor: an error each time, never kept
            _, stale = await raw_list(running.url, "tools/list", {"_meta": ENVELOPE, "cursor": "not-a-cursor"})
            assert stale["error"]["code"] == -32602, stale


async def test_at_most_max_pages_are_kept(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("many")]) as running:
        assert running.aggregator.fast_calls is not None
        kept = (
            cache_of(running).pages,
            running.aggregator.fast_calls.lists.pages,
        )  # the SDK's middleware, the fast path
        for pages in kept:
            pages.max_pages = 2
        async with mcp_client(running.url, MODERN) as client:
            cursor = None
            for _ in range(3):  # 250 tools, 100 a page: three pages
                page = await client.list_tools(cursor=cursor)
                cursor = page.next_cursor
            assert cursor is None
            assert [len(pages) for pages in kept] == [2, 2]
            hits = kept_hits(running)
            await client.list_tools()  # the first page was the least recently used: gone
            assert kept_hits(running) == hits


def test_kept_bytes_pages_stay_within_their_byte_budget() -> None:
    catalog, other = object(), object()
    pages = KeptPages(100, max_bytes=250)
    assert pages.get(catalog, ("tools/list", MODERN, None)) is None
    for cursor in ("a", "b", "c"):
        pages.keep(catalog, ("tools/list", MODERN, cursor), b"x" * 100)
    assert len(pages) == 2  # 300 bytes > 250: the least recently used ("a") went
    assert pages.get(catalog, ("tools/list", MODERN, "a")) is None
    assert pages.get(catalog, ("tools/list", MODERN, "c")) == b"x" * 100 and pages.hits == 1
    pages.keep(other, ("tools/list", MODERN, "d"), b"y")  # made from a catalog that is no longer current: dropped
    assert pages.get(other, ("tools/list", MODERN, "d")) is None and len(pages) == 0  # a new catalog empties them
