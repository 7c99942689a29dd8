"""Large views in pages: no admin response is larger than a default gRPC client reads (4 MB), and the
admin client (the CLI's, the aggregator's) puts the pages back together."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest

from xds_control.admin.client import AdminClient
from xds_control.admin.service import MESSAGE_BUDGET
from xds_control.admin.v1 import admin_pb2 as pb
from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc
from xds_control.view import Catalog

from .conftest import Harness

DEFAULT_LIMIT = 4 * 1024 * 1024  # grpc's default max receive message length


def big_catalog(tag: str, size: int = 2_000_000) -> Catalog:
    tools = [{"name": f"{tag}_{i}", "description": "d" * 1000} for i in range(size // 1030)]
    return Catalog.build(tools=tools)


@pytest.fixture
def big_view(harness: Harness) -> dict[str, Catalog]:
    catalogs = {"weather": big_catalog("w"), "calc": big_catalog("c")}
    for name, catalog in catalogs.items():
        harness.store.update_backend(name, lambda s, c=catalog: replace(s, catalog=c))
    return catalogs


async def test_list_backends_pages_a_view_a_default_client_could_not_read_whole(
    harness: Harness, big_view: dict[str, Catalog]
) -> None:
    async with grpc.aio.insecure_channel(harness.target) as channel:  # default options: 4 MB receive limit
        stub = pb_grpc.AdminStub(channel)
        first = await stub.ListBackends(pb.ListBackendsRequest(), timeout=10)
        assert [b.name for b in first.backends] == ["weather"] and first.next_page_token
        second = await stub.ListBackends(pb.ListBackendsRequest(page_token=first.next_page_token), timeout=10)
        assert [b.name for b in second.backends] == ["calc"] and not second.next_page_token
        assert first.version == second.version
        for page in (first, second):
            assert page.ByteSize() <= MESSAGE_BUDGET < DEFAULT_LIMIT
            assert all(b.catalog_json for b in page.backends)
        small = await stub.ListBackends(pb.ListBackendsRequest(omit_catalogs=True), timeout=10)
        assert len(small.backends) == 2 and not small.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListBackends(pb.ListBackendsRequest(page_token="nonsense"), timeout=10)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_watch_sends_a_large_view_in_parts_and_the_client_puts_it_back_together(
    harness: Harness, big_view: dict[str, Catalog]
) -> None:
    async with grpc.aio.insecure_channel(harness.target) as channel:
        stream = pb_grpc.AdminStub(channel).Watch(pb.WatchRequest())
        first, second = await stream.read(), await stream.read()
        stream.cancel()
    assert first.more and not second.more and first.version == second.version
    assert [b.name for b in (*first.backends, *second.backends)] == ["weather", "calc"]
    async with AdminClient(harness.target) as client:
        snapshot = await client.snapshot()
        events = client.watch(reconnect=False)
        event = await anext(events)
        await events.aclose()
    for view in (snapshot, event):
        assert {name: s.catalog.hash for name, s in view.backends.items() if s.catalog} == {
            name: c.hash for name, c in big_view.items()
        }
