"""Mutating calls always need the admin token (configured, or the cookie the control plane writes); read calls never do."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from xds_control.admin.auth import TokenGuard, configured_guard, is_loopback
from xds_control.admin.client import AdminClient, Outcome
from xds_control.admin.cookie import cookie_path, read_cookie
from xds_control.admin.service import start_admin_server
from xds_control.errors import AdminError, Unauthorized
from xds_control.view import ViewStore

from .conftest import PLANTED_TOKEN, TOKEN_ENV, Harness, make_config, start_harness


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"]
)
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "192.168.1.5", "fe80::1", "admin.example.com", ""])
def test_non_loopback_addresses(host: str) -> None:
    assert not is_loopback(host)


def test_non_loopback_without_token_env_is_refused_with_a_clear_error() -> None:
    with pytest.raises(AdminError, match="admin_token_env"):
        configured_guard("0.0.0.0", None, {})


def test_non_loopback_with_empty_token_is_refused_naming_the_variable() -> None:
    with pytest.raises(AdminError, match=TOKEN_ENV):
        configured_guard("0.0.0.0", TOKEN_ENV, {TOKEN_ENV: "  "})


def test_a_configured_token_guards_loopback_too_and_no_token_means_a_cookie() -> None:
    guard = configured_guard("127.0.0.1", TOKEN_ENV, {TOKEN_ENV: PLANTED_TOKEN})
    assert guard is not None and guard.accepts(PLANTED_TOKEN) and not guard.accepts("other")
    assert configured_guard("127.0.0.1", None, {}) is None  # the server makes one and writes the cookie


def test_guard_accepts_only_the_exact_bearer_token() -> None:
    guard = TokenGuard(PLANTED_TOKEN)
    guard.check([("authorization", f"Bearer {PLANTED_TOKEN}")], "Drain")
    guard.check([("authorization", f"bearer {PLANTED_TOKEN}")], "Drain")
    for metadata in (
        [],
        [("authorization", PLANTED_TOKEN)],
        [("authorization", f"Bearer {PLANTED_TOKEN}x")],
        [("x-token", PLANTED_TOKEN)],
    ):
        with pytest.raises(Unauthorized) as info:
            guard.check(metadata, "Drain")
        assert PLANTED_TOKEN not in str(info.value)
    assert PLANTED_TOKEN not in repr(guard)


async def test_start_refuses_non_loopback_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    for extra in ({}, {"admin_token_env": TOKEN_ENV}):
        config = make_config("0.0.0.0:1", **extra)
        with pytest.raises(AdminError, match="not a loopback address"):
            await start_admin_server(config, ViewStore(config), None, None)


async def test_loopback_mutations_need_the_cookie_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    h = await start_harness("127.0.0.2")
    try:
        assert h.server.token_required
        cookie = cookie_path(h.config.control_plane)
        assert h.server.cookie == cookie and cookie.stat().st_mode & 0o777 == 0o600
        assert cookie.parent.stat().st_mode & 0o077 == 0
        token = read_cookie(cookie)
        assert token and len(token) >= 32
        async with AdminClient(f"127.0.0.2:{h.server.port}", lambda: None) as c:
            with pytest.raises(Unauthorized, match="no token") as info:
                await c.drain("weather")
            assert token not in str(info.value) and str(cookie) in str(info.value)
        async with AdminClient(f"127.0.0.2:{h.server.port}", "wrong-token") as c:
            with pytest.raises(Unauthorized, match="not this control plane's"):
                await c.drain("weather")
        async with AdminClient(f"127.0.0.2:{h.server.port}") as c:  # no token given: the port's cookie
            assert (await c.drain("weather")).drained
        assert not h.store.current.backends["calc"].drained
    finally:
        await h.server.stop(grace=0.5)
    assert not cookie.exists()  # removed at a clean stop


async def test_a_restarted_control_plane_writes_a_new_cookie_that_clients_pick_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    first = await start_harness()
    port = first.server.port
    client = AdminClient(first.target)
    try:
        assert (await client.drain("weather")).drained
        old = read_cookie(cookie_path(first.config.control_plane))
        await first.server.stop(grace=0.5)
        second_store = ViewStore(first.config)
        second = await start_admin_server(first.config, second_store, None, None)
        try:
            assert second.port == port and read_cookie(cookie_path(first.config.control_plane)) != old
            assert (await client.drain("calc")).drained  # the same client object reads the new cookie
        finally:
            await second.stop(grace=0.5)
    finally:
        await client.close()


@pytest.fixture
async def open_harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """Bound to 0.0.0.0 (not loopback) with the token in the environment."""
    monkeypatch.setenv(TOKEN_ENV, PLANTED_TOKEN)
    h = await start_harness("0.0.0.0", admin_token_env=TOKEN_ENV)
    try:
        yield h
    finally:
        await h.server.stop(grace=0.5)


async def test_off_loopback_mutations_need_the_token(open_harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert open_harness.server.token_required
    for token in (None, "wrong-token"):
        async with open_harness.client(token) as c:
            for call in (c.drain, c.undrain, c.probe_now, c.reset_breaker):
                with pytest.raises(Unauthorized) as info:
                    await call("weather")
                assert PLANTED_TOKEN not in str(info.value)
            with pytest.raises(Unauthorized):
                await c.report_outcomes([Outcome("weather", successes=1)])
            # Read-only calls stay open.
            assert len(await c.list_backends()) == 2
            assert (await c.get_backend("calc")).name == "calc"
            assert await c.nodes() == []
            events = c.watch(reconnect=False)
            assert (await anext(events)).version == 1
            await events.aclose()
    assert not open_harness.store.current.backends["weather"].drained
    assert open_harness.health.probed == [] and open_harness.health.outcomes == []
    assert PLANTED_TOKEN not in caplog.text


async def test_off_loopback_mutations_pass_with_the_token(
    open_harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_harness.client(PLANTED_TOKEN) as c:
        assert PLANTED_TOKEN not in repr(c)
        assert (await c.drain("weather")).drained
        assert not (await c.undrain("weather")).drained
        await c.probe_now("weather")
        await c.reset_breaker("weather")
        assert await c.report_outcomes([Outcome("weather", failures=1, last_failure_category="timeout")]) == []
    assert open_harness.health.probed == ["weather"]
    assert PLANTED_TOKEN not in caplog.text


async def test_unauthenticated_is_the_grpc_status(open_harness: Harness) -> None:
    from xds_control.admin.v1 import admin_pb2 as pb
    from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc

    channel = grpc.aio.insecure_channel(open_harness.target)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AdminStub(channel).Drain(pb.DrainRequest(name="weather"), timeout=5)
    finally:
        await channel.close()
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
