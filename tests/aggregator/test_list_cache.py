"""List pages kept on the merged catalog they were made from (aggregator/list_pages.py): real demo backends,
the aggregator in process, real SDK clients of both families and raw JSON-RPC."""

from __future__ import annotations

from typing import Any

import pytest

from tests.aggregator.conftest import Fleet, Running, tool_names
from tests.aggregator.support import FAMILIES, MODERN, MODERN_ENVELOPE, MODERN_HEADERS, dump, mcp_client, post_jsonrpc
from xds_control.aggregator.list_pages import EVERYONE, ListPages
from xds_control.view import BackendState

pytestmark = pytest.mark.integration

ENVELOPE = MODERN_ENVELOPE


def kept_hits(running: Running) -> int:
    """Pages answered from the current catalog's memo."""
    return running.aggregator.gateway.catalog.pages.hits


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


async def test_a_new_catalog_starts_with_no_pages(serve: Any, fleet: Fleet) -> None:
    async with (
        serve([fleet.entry("many"), fleet.entry("weather")]) as running,
        mcp_client(running.url, MODERN) as client,
    ):
        await client.list_tools()
        before = running.aggregator.gateway.catalog
        assert len(before.pages) == 1
        await running.set_state("weather", BackendState.UNHEALTHY)
        after = running.aggregator.gateway.catalog
        assert after is not before and len(after.pages) == 0
        await client.list_tools()
        assert len(after.pages) == 1


def test_kept_pages_stay_within_their_byte_budget() -> None:
    pages = ListPages(max_bytes=250)
    key = (EVERYONE, "tools/list", MODERN, 100)
    assert pages.get((*key, None)) is None
    for cursor in ("a", "b", "c"):
        pages.keep((*key, cursor), b"x" * 100)
    assert len(pages) == 2  # 300 bytes > 250: the least recently used ("a") went
    assert pages.get((*key, "a")) is None
    assert pages.get((*key, "c")) == b"x" * 100 and pages.hits == 1
    pages.keep((*key, "d"), b"y" * 300)  # larger than the whole budget: never kept
    assert pages.get((*key, "d")) is None and len(pages) == 2
    pages.keep(("a grant set", *key[1:], None), b"z")  # another audience's page sits beside them
    assert pages.get(("a grant set", *key[1:], None)) == b"z" and pages.get((*key, None)) is None
