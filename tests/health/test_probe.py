"""The endpoint prober against real MCP backends: both families, catalogs, faults, auth, lost sessions."""

from __future__ import annotations

import asyncio
import signal
import tracemalloc
from pathlib import Path

import pytest

from tests.health.conftest import WEATHER_TOOLS, Backends, FaultSwitch, Fleet, make_config, url
from tests.support.canned_http import Answer, CannedServer, Request
from tests.support.procs import python_module
from tests.support.waiting import async_wait_until, free_port
from xds_control.config import Config
from xds_control.health.changes import ListenEnd, can_listen, listen
from xds_control.health.probe import EndpointProber

pytestmark = pytest.mark.integration


def prober_for(config: Config, name: str | None = None) -> EndpointProber:
    backend = config.backend(name) if name else config.backends[0]
    assert backend is not None
    return EndpointProber(backend, backend.endpoint_urls[0], config.health)


def single(port: int, **backend: object) -> Config:
    return make_config([{"name": "b", "url": url(port), **backend}])


@pytest.mark.parametrize(
    ("server", "protocol", "expected"),
    [
        ("both", "auto", "modern"),
        ("modern", "auto", "modern"),
        ("legacy", "auto", "legacy"),
        ("stateless", "auto", "legacy"),
        ("both-json", "auto", "modern"),
        ("legacy-json", "auto", "legacy"),
        ("both", "legacy", "legacy"),
        ("both", "modern", "modern"),
    ],
)
async def test_both_protocol_families_probe_and_list_every_page(
    fleet: Fleet, server: str, protocol: str, expected: str
) -> None:
    prober = prober_for(single(fleet.port(server), protocol=protocol))
    try:
        first = await prober.probe(fetch_catalog=True)
        assert first.ok, first
        assert first.protocol == expected and first.category is None and first.latency > 0
        assert first.catalog is not None
        names = [t["name"] for t in first.catalog.tools]
        assert (
            set(names) >= WEATHER_TOOLS
            and {f"tool_{i}" for i in range(60)} <= set(names)
            and len(names) == len(set(names))
        )
        assert [r["uri"] for r in first.catalog.resources] == ["weather://stations"]
        assert [p["name"] for p in first.catalog.prompts] == ["weather_briefing"]
        second = await prober.probe()
        assert second.ok and second.catalog is None and second.protocol == expected
        if expected == "legacy":
            assert (prober.session_id is None) == (server == "stateless")
    finally:
        await prober.aclose()


@pytest.mark.parametrize(("server", "protocol"), [("legacy", "modern"), ("modern", "legacy")])
async def test_forced_family_against_the_other_one_fails_cleanly(fleet: Fleet, server: str, protocol: str) -> None:
    prober = prober_for(single(fleet.port(server), protocol=protocol))
    try:
        result = await prober.probe()
        assert not result.ok and result.category == "jsonrpc_error", result
    finally:
        await prober.aclose()


async def test_connection_refused_and_dns() -> None:
    refused = prober_for(single(free_port()))
    dns = prober_for(make_config([{"name": "b", "url": "http://backend.invalid/mcp"}]))
    try:
        assert (await refused.probe()).category == "connection_refused"
        assert (await dns.probe()).category == "dns"
    finally:
        await refused.aclose()
        await dns.aclose()


@pytest.mark.parametrize(
    ("mode", "category", "retry_after"),
    [
        ("hang", "timeout", None),
        ("garbage", "protocol_error", None),
        ("http429", "rate_limited", 2.0),
        ("http500", "http_5xx", None),
        ("http401", "authentication_failed", None),
        ("huge", "response_too_large", None),
    ],
)
@pytest.mark.parametrize("protocol", ["auto", "legacy"])
async def test_fault_modes_are_classified(
    faulty: tuple[FaultSwitch, int], mode: str, category: str, retry_after: float | None, protocol: str
) -> None:
    switch, port = faulty
    config = make_config([{"name": "b", "url": url(port), "protocol": protocol}], health={"timeout": 0.5})
    prober = prober_for(config)
    try:
        assert (await prober.probe()).ok
        switch.set(mode)
        result = await prober.probe()
        assert not result.ok and result.category == category and result.retry_after == retry_after, result
        switch.set("none")
        assert (await prober.probe(fetch_catalog=True)).ok  # recovers on the same prober
    finally:
        switch.set("none")
        await prober.aclose()


async def test_huge_response_is_not_read_into_memory(faulty: tuple[FaultSwitch, int]) -> None:
    """The 50 MiB body is abandoned at the limit: the probe allocates a tiny fraction of it."""
    switch, port = faulty
    prober = prober_for(make_config([{"name": "b", "url": url(port)}], health={"max_response_bytes": 65536}))
    try:
        assert (await prober.probe()).ok
        switch.set("huge")
        tracemalloc.start()
        try:
            result = await prober.probe()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.category == "response_too_large"
        assert peak < 5 * 1024 * 1024, f"peak {peak} bytes"
    finally:
        switch.set("none")
        await prober.aclose()


async def test_bearer_token_is_read_fresh_on_every_probe(
    backends: Backends, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "server-token"
    token_file.write_text("right-token")
    _, port = backends.start("demo", "--token-file", str(token_file))
    monkeypatch.setenv("PROBE_TOKEN", "wrong-token")
    prober = prober_for(single(port, auth={"type": "bearer", "token_env": "PROBE_TOKEN"}))
    try:
        assert (await prober.probe()).category == "authentication_failed"
        monkeypatch.setenv("PROBE_TOKEN", "right-token")
        assert (await prober.probe(fetch_catalog=True)).ok
        token_file.write_text("rotated-token")
        assert (await prober.probe()).category == "authentication_failed"
        monkeypatch.delenv("PROBE_TOKEN")
        assert (await prober.probe()).category == "authentication_failed"
    finally:
        await prober.aclose()


async def test_replaced_backend_on_the_same_port_is_probed_ok_at_once(backends: Backends) -> None:
    """A new process behind the same port: no stale keep-alive connection, a lost session re-initialized in-probe."""
    specs = {family: ("demo", "--family", family) for family in ("legacy", "modern")}
    started = backends.start_many(specs)
    probers = {family: prober_for(single(port)) for family, (_, port) in started.items()}
    try:
        for prober in probers.values():
            assert (await prober.probe()).ok
        old_session = probers["legacy"].session_id
        assert old_session is not None
        for proc, _ in started.values():
            proc.kill()
        backends.start_many(specs, ports={family: port for family, (_, port) in started.items()})
        for family, prober in probers.items():
            result = await prober.probe()
            assert result.ok, (family, result)
        assert probers["legacy"].session_id not in (None, old_session)
    finally:
        for prober in probers.values():
            await prober.aclose()


@pytest.mark.parametrize("server", ["legacy", "modern"])
async def test_list_changed_is_heard_on_both_families(fleet: Fleet, server: str) -> None:
    proc, port = fleet.proc(server), fleet.port(server)
    prober = prober_for(single(port))
    changes: list[int] = []
    opened = asyncio.Event()
    try:
        before = await prober.probe(fetch_catalog=True)
        assert before.ok and before.catalog is not None
        assert can_listen(prober)
        task = asyncio.create_task(listen(prober, lambda: changes.append(1), on_open=opened.set))
        async with asyncio.timeout(5):
            await opened.wait()
        Backends().signal(proc, signal.SIGUSR1)
        await async_wait_until(lambda: changes, timeout=5, what="a list_changed notification")
        catalog = await prober.fetch_catalog()
        added = {t["name"] for t in catalog.tools} - {t["name"] for t in before.catalog.tools}
        assert len(added) == 1 and added.pop().startswith("dynamic_")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await prober.aclose()


async def test_stateless_legacy_backend_has_no_change_stream(fleet: Fleet) -> None:
    prober = prober_for(single(fleet.port("stateless")))
    try:
        assert (await prober.probe()).ok
        assert not can_listen(prober)
        assert await listen(prober, lambda: None) is ListenEnd.UNSUPPORTED
    finally:
        await prober.aclose()


async def test_a_plain_web_server_is_not_mcp(tmp_path: Path) -> None:
    """`python -m http.server` answers 501 to a POST: not an MCP endpoint, not a failing one (`http_5xx`)."""
    port = free_port()
    with python_module("http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)) as server:
        await asyncio.to_thread(server.wait_for_line, "Serving HTTP", 20)
        prober = prober_for(single(port))
        try:
            result = await prober.probe()
        finally:
            await prober.aclose()
    assert not result.ok and result.category == "not_mcp", result


async def test_an_html_page_answering_a_post_is_not_mcp() -> None:
    """A proxy or web app that answers every path with a 200 HTML page."""

    def page(request: Request) -> Answer:
        return Answer(200, b"<html><body>Welcome</body></html>", {"content-type": "text/html; charset=utf-8"})

    async with CannedServer(page) as server:
        prober = prober_for(make_config([{"name": "b", "url": server.url}]))
        try:
            result = await prober.probe()
        finally:
            await prober.aclose()
    assert not result.ok and result.category == "not_mcp", result
