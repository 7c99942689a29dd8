"""The ADS server against hostile peers (a real gRPC server on a free port, raw streams): bounded inbox,
per-stream nonces, truncated and escaped NACK details and node ids, clean statuses, the ADS token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.hostile import ads
from tests.support.stack import async_start_envoy, running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_port
from xds_control.config import parse_config
from xds_control.errors import ConfigError
from xds_control.view import ViewStore
from xds_control.xds import typeurls as t
from xds_control.xds.bootstrap import render_bootstrap
from xds_control.xds.nodes import NodeDirectory
from xds_control.xds.server import (
    MAX_DETAIL_CHARS,
    MAX_QUEUED_REQUESTS,
    MAX_REQUEST_BYTES,
    MAX_STALE_STREAK,
    AdsService,
    XdsServer,
    start_xds_server,
)
from xds_control.xds.snapshot import SnapshotBuilder, SnapshotCache

TOKEN = "ads-Token-5b7e1c"


async def serve(backends: int = 1, **kwargs: object) -> tuple[XdsServer, NodeDirectory, SnapshotCache, str]:
    config = parse_config(
        {"backends": [{"name": f"b{i}", "url": f"http://127.0.0.1:{9000 + i}/mcp"} for i in range(backends)]}
    )
    cache, nodes = SnapshotCache(), NodeDirectory()
    cache.set(SnapshotBuilder().build(ViewStore(config).current))
    server = await start_xds_server("127.0.0.1", free_port(), AdsService(cache, nodes, **kwargs))  # type: ignore[arg-type]
    return server, nodes, cache, f"127.0.0.1:{server.port}"


@pytest.fixture
async def plane() -> AsyncIterator[tuple[NodeDirectory, str]]:
    server, nodes, _cache, target = await serve()
    try:
        yield nodes, target
    finally:
        await server.stop(0.1)


async def status_of(call: grpc.aio.StreamStreamCall) -> tuple[grpc.StatusCode, str]:
    code = await asyncio.wait_for(call.code(), 20)
    return code, await call.details()


async def test_malformed_protobuf_ends_the_stream_with_invalid_argument_and_no_traceback(
    plane: tuple[NodeDirectory, str], caplog: pytest.LogCaptureFixture
) -> None:
    _nodes, target = plane
    async with ads.channel(target) as channel:
        call = ads.open_stream(channel)
        with contextlib.suppress(grpc.aio.AioRpcError):  # the refusal may race the write
            await call.write(b"\xff\xff\xff\xff not a protobuf")
        code, details = await status_of(call)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "malformed" in details
    assert "Group" not in details and "Traceback" not in caplog.text and "ExceptionGroup" not in caplog.text


class StuckPeer:
    """A servicer context whose peer never reads: the first write blocks forever. Records the abort."""

    def __init__(self) -> None:
        self.writes = 0
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.writing = asyncio.Event()

    async def write(self, body: bytes) -> None:
        self.writes += 1
        self.writing.set()
        await asyncio.Event().wait()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def invocation_metadata(self) -> tuple[()]:
        return ()


async def test_a_peer_that_never_reads_is_cut_off_once_its_inbox_is_full() -> None:
    config = parse_config({"backends": [{"name": "b", "url": "http://127.0.0.1:9/mcp"}]})
    cache = SnapshotCache()
    cache.set(SnapshotBuilder().build(ViewStore(config).current))
    peer = StuckPeer()

    async def requests() -> AsyncIterator[bytes]:
        yield ads.request(t.CLUSTER)
        await peer.writing.wait()  # the server is now blocked writing to a peer that never reads
        for i in range(10 * MAX_QUEUED_REQUESTS):  # guessed ACKs and re-requests
            yield ads.request(t.CLUSTER, nonce=str(i))

    service = AdsService(cache, NodeDirectory())
    with pytest.raises(grpc.aio.AbortError):
        await asyncio.wait_for(service.stream(requests(), peer), 10)  # type: ignore[arg-type]
    assert peer.writes == 1 and peer.aborted is not None
    code, details = peer.aborted
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "requests waiting" in details
    assert service.streams == 0


async def test_guessed_nonces_cause_no_pushes_and_a_streak_of_them_closes_the_stream(
    plane: tuple[NodeDirectory, str],
) -> None:
    _nodes, target = plane
    async with ads.channel(target) as channel:
        call = ads.open_stream(channel)
        await call.write(ads.request(t.CLUSTER))
        first = ads.response(await asyncio.wait_for(call.read(), 10))
        assert first.nonce
        for i in range(MAX_STALE_STREAK + 1):  # what a global counter let an attacker ACK unread: now stale
            await call.write(ads.request(t.CLUSTER, nonce=str(i), version="1"))
        with pytest.raises(grpc.aio.AioRpcError):  # nothing more was pushed; the stream was closed
            await asyncio.wait_for(call.read(), 10)
        code, details = await status_of(call)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "never sent" in details


async def test_nonces_are_per_stream_and_unguessable(plane: tuple[NodeDirectory, str]) -> None:
    _nodes, target = plane
    async with ads.channel(target) as channel:
        nonces = []
        for _ in range(2):
            call = ads.open_stream(channel)
            await call.write(ads.request(t.CLUSTER))
            response = ads.response(await asyncio.wait_for(call.read(), 10))
            nonces.append(response.nonce)
            call.cancel()
    first, second = nonces
    assert first != second and first.split("-")[0] != second.split("-")[0] and len(first.split("-")[0]) == 16


async def test_a_nack_detail_and_a_node_id_are_truncated_and_escaped(
    plane: tuple[NodeDirectory, str], caplog: pytest.LogCaptureFixture
) -> None:
    nodes, target = plane
    caplog.set_level(logging.INFO)
    node = "evil\x1b[31m\nnode\u202e" + "n" * 5000
    async with ads.channel(target) as channel:
        call = ads.open_stream(channel)
        await call.write(ads.request(t.CLUSTER, node=node))
        response = ads.response(await asyncio.wait_for(call.read(), 10))
        detail = "bad\x00thing\x1b]0;owned\x07 " + "x" * (MAX_REQUEST_BYTES - 16384)
        await call.write(ads.request(t.CLUSTER, node=node, nonce=response.nonce, error=detail))
        await async_wait_until(lambda: any(ts.nack_detail for n in nodes.nodes() for ts in n.types.values()))
        [info] = nodes.nodes()
        stored = next(ts.nack_detail for ts in info.types.values() if ts.nack_detail)
        call.cancel()
    assert len(info.node_id) < 300 and "\x1b" not in info.node_id and "\n" not in info.node_id
    assert "\u202e" not in info.node_id and "\\x1b" in info.node_id
    assert len(stored) < MAX_DETAIL_CHARS + 50 and "\x00" not in stored and "\x1b" not in stored
    [nack] = [r for r in caplog.records if getattr(r, "event", None) == "nack"]
    assert len(nack.getMessage()) < MAX_DETAIL_CHARS + 500 and "\x1b" not in nack.getMessage()
    assert all("\x1b" not in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)


async def test_a_request_over_the_size_bound_is_refused_by_grpc(plane: tuple[NodeDirectory, str]) -> None:
    _nodes, target = plane
    async with ads.channel(target) as channel:
        call = ads.open_stream(channel)
        with contextlib.suppress(grpc.aio.AioRpcError):  # the refusal may race the write
            await call.write(ads.request(t.CLUSTER, error="x" * (5 * 1024 * 1024)))
        code, _details = await status_of(call)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_with_a_token_a_stream_without_it_is_refused() -> None:
    server, nodes, _cache, target = await serve(token=TOKEN)
    try:
        async with ads.channel(target) as channel:
            for metadata in (None, (("authorization", "Bearer wrong"),)):
                call = ads.open_stream(channel, metadata)
                # The refusal is decided on the metadata alone. Half-closing (rather than writing a request) keeps
                # the client's stream from racing the server's abort: a write in flight may end as INTERNAL.
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await call.done_writing()
                code, details = await status_of(call)
                assert code is grpc.StatusCode.UNAUTHENTICATED and "xds_token_env" in details
                assert TOKEN not in details
            call = ads.open_stream(channel, (("authorization", f"Bearer {TOKEN}"),))
            await call.write(ads.request(t.CLUSTER))
            assert ads.response(await asyncio.wait_for(call.read(), 10)).resources
            call.cancel()
        assert nodes.nodes() == [] or all(n.node_id == "hostile" for n in nodes.nodes())
    finally:
        await server.stop(0.1)


def test_xds_off_loopback_needs_a_token_env() -> None:
    with pytest.raises(ConfigError, match="xds_token_env"):
        parse_config({"control_plane": {"xds": "0.0.0.0:18000"}})
    parse_config({"control_plane": {"xds": "0.0.0.0:18000", "xds_token_env": "XDS_TOKEN"}})
    parse_config({"control_plane": {"xds": "127.0.0.5:18000"}})


@pytest.mark.integration
async def test_a_real_envoy_presents_the_token_from_its_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDS_TEST_ADS_TOKEN", TOKEN)
    config = stack_config(
        [{"name": "b", "url": "http://127.0.0.1:9/mcp"}], control_plane={"xds_token_env": "XDS_TEST_ADS_TOKEN"}
    )
    assert TOKEN in render_bootstrap(config)
    async with running_control_plane(config) as plane:
        envoy = await async_start_envoy(config, tmp_path)  # ready only once its first ADS answers arrived
        try:
            assert [n.node_id for n in plane.nodes.nodes()] == [config.envoy.node_id]
        finally:
            await asyncio.to_thread(envoy.stop)
    monkeypatch.delenv("XDS_TEST_ADS_TOKEN")
    with pytest.raises(ConfigError, match="XDS_TEST_ADS_TOKEN"):
        render_bootstrap(config)
    assert "${XDS_TEST_ADS_TOKEN}" in render_bootstrap(config, placeholder=True)


def test_a_configured_ads_token_that_is_missing_stops_the_control_plane_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xds_control.controlplane import ControlPlane

    monkeypatch.delenv("XDS_TEST_ABSENT_TOKEN", raising=False)
    config = parse_config({"control_plane": {"xds_token_env": "XDS_TEST_ABSENT_TOKEN"}})
    with pytest.raises(ConfigError, match="XDS_TEST_ABSENT_TOKEN"):
        ControlPlane(config)
