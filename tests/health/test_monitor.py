"""The health monitor against real backends: the view follows kills, restarts, faults, auth and reloads."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import prometheus_client
import pytest

from tests.health.conftest import Backends, FaultSwitch, Fleet, make_config, running, url, wait_state, wait_status
from tests.support.waiting import async_wait_until, free_port
from xds_control.view import BackendState, BreakerState

pytestmark = pytest.mark.integration

HEALTHY, DEGRADED, UNHEALTHY = BackendState.HEALTHY, BackendState.DEGRADED, BackendState.UNHEALTHY
UNAUTHENTICATED, UNKNOWN = BackendState.UNAUTHENTICATED, BackendState.UNKNOWN


def tool_count(status: object) -> int:
    catalog = getattr(status, "catalog", None)
    return len(catalog.tools) if catalog is not None else -1


async def test_killed_backend_turns_unhealthy_and_restarted_one_recovers_with_a_fresh_catalog(
    backends: Backends,
) -> None:
    started = backends.start_many({"legacy": ("demo", "--family", "legacy"), "modern": ("demo", "--family", "modern")})
    config = make_config(
        [{"name": key, "url": url(port)} for key, (_, port) in started.items()], health={"catalog_refresh": 300}
    )
    async with running(config) as (_, store):
        for name in started:
            status = await wait_state(store, name, HEALTHY)
            assert status.routable and tool_count(status) == 3 and status.last_error is None
        for proc, _ in started.values():
            proc.kill()
        for name in started:
            status = await wait_state(store, name, UNHEALTHY)
            assert not status.routable and status.last_error == "connection_refused", name
            assert status.consecutive_failures >= 2 and status.endpoints[0].state is UNHEALTHY
        backends.start_many(
            {name: ("demo", "--family", name, "--tools", "2") for name in started},
            ports={k: port for k, (_, port) in started.items()},
        )
        for name in started:
            status = await wait_state(store, name, HEALTHY)
            assert tool_count(status) == 5, f"{name}: catalog refetched on recovery"
            assert status.consecutive_failures == 0 and status.last_success is not None


async def test_backend_that_starts_after_the_monitor_becomes_healthy_on_its_own(backends: Backends) -> None:
    port = free_port()
    config = make_config([{"name": "late", "url": url(port)}])
    async with running(config) as (_, store):
        assert store.current.backend("late").state is UNKNOWN
        await wait_state(store, "late", UNHEALTHY)
        backends.start("demo", port=port)
        status = await wait_state(store, "late", HEALTHY)
        assert status.catalog is not None and status.routable


async def test_faults_reach_the_view_as_states(faulty: tuple[FaultSwitch, int]) -> None:
    switch, port = faulty
    config = make_config([{"name": "f", "url": url(port)}], health={"timeout": 0.3})
    async with running(config) as (_, store):
        await wait_state(store, "f", HEALTHY)
        switch.set("http429")
        status = await wait_state(store, "f", DEGRADED)
        assert status.routable and status.last_error == "rate_limited"
        assert status.retry_at is not None and 0 < status.retry_after(time.time()) <= 2.0  # Retry-After: 2
        switch.set("none")
        await wait_state(store, "f", HEALTHY, timeout=5)
        switch.set("http401")
        status = await wait_state(store, "f", UNAUTHENTICATED)
        assert not status.routable and status.last_error == "authentication_failed"
        for mode, category in (
            ("hang", "timeout"),
            ("garbage", "protocol_error"),
            ("huge", "response_too_large"),
            ("http500", "http_5xx"),
        ):
            switch.set("none")
            await wait_state(store, "f", HEALTHY)
            switch.set(mode)
            status = await wait_state(store, "f", UNHEALTHY)
            assert status.last_error == category, mode


async def test_breaker_opens_waits_and_closes_through_half_open(
    faulty: tuple[FaultSwitch, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xds_control.health")
    switch, port = faulty
    config = make_config(
        [{"name": "b", "url": url(port)}],
        circuit_breaker={
            "failure_threshold": 2,
            "open_timeout": 0.3,
            "max_open_timeout": 0.6,
            "half_open_successes": 1,
        },
    )
    async with running(config) as (_, store):
        await wait_state(store, "b", HEALTHY)
        switch.set("http500")
        status = await wait_status(store, "b", lambda s: s.breaker is BreakerState.OPEN, what="breaker open")
        assert not status.routable and status.retry_at is not None and 0 <= status.retry_after(time.time()) <= 0.6
        await wait_status(store, "b", lambda s: s.breaker is BreakerState.HALF_OPEN, what="breaker half-open")
        await wait_status(store, "b", lambda s: s.breaker is BreakerState.OPEN, what="re-opened by the half-open probe")
        switch.set("none")
        status = await wait_status(
            store, "b", lambda s: s.breaker is BreakerState.CLOSED and s.state is HEALTHY, what="closed and healthy"
        )
        assert status.routable
    lines = [
        (r.__dict__["from"], r.__dict__["to"]) for r in caplog.records if r.getMessage().startswith("breaker of b")
    ]
    assert lines[:4] == [("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("open", "half_open")]
    assert lines[-1] == ("half_open", "closed")


async def test_one_log_line_per_transition_never_per_probe(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="xds_control.health")
    config = make_config([{"name": "b", "url": url(fleet.port("legacy"))}])
    async with running(config) as (monitor, store):
        await wait_state(store, "b", HEALTHY)
        for _ in range(5):
            await monitor.probe_now("b")
    lines = [r for r in caplog.records if r.name == "xds_control.health"]
    assert [(r.__dict__["backend"], r.__dict__["from"], r.__dict__["to"], r.__dict__["reason"]) for r in lines] == [
        ("b", "unknown", "healthy", "probe_ok")
    ]


@pytest.mark.parametrize("family", ["legacy", "modern"])
async def test_list_changed_refreshes_the_catalog_before_the_periodic_refresh(fleet: Fleet, family: str) -> None:
    proc = fleet.proc(family)
    config = make_config(
        [{"name": "b", "url": url(fleet.port(family))}], health={"catalog_refresh": 300, "interval": 30}
    )
    async with running(config) as (monitor, store):
        status = await wait_status(store, "b", lambda s: s.catalog is not None, what="first catalog")
        before = tool_count(status)
        endpoint = monitor._backends["b"].endpoints[0]
        await async_wait_until(lambda: endpoint.listening, timeout=5, what="the change stream to open")
        Backends().signal(proc, signal.SIGUSR1)
        await wait_status(
            store, "b", lambda s: tool_count(s) == before + 1, timeout=5, what="catalog with the added tool"
        )


async def test_probe_now_reset_breaker_and_data_path_feedback(fleet: Fleet) -> None:
    config = make_config(
        [{"name": "b", "url": url(fleet.port("modern"))}],
        health={"interval": 30},
        circuit_breaker={"failure_threshold": 3, "open_timeout": 60},
    )
    async with running(config) as (monitor, store):
        status = await monitor.probe_now("b")
        assert status.state is HEALTHY and status.catalog is not None and status.last_probe_ms is not None
        await monitor.record_outcomes("b", successes=0, failures=2, category="http_5xx")
        assert store.current.backend("b").breaker is BreakerState.CLOSED
        await monitor.record_outcomes(
            "b", successes=1, failures=2, category="http_5xx"
        )  # successes first: count restarts
        assert store.current.backend("b").breaker is BreakerState.CLOSED
        await monitor.record_outcomes("b", successes=0, failures=1, category="Authorization: Bearer leaked")
        status = store.current.backend("b")
        assert status.breaker is BreakerState.OPEN and not status.routable and status.retry_at is not None
        deadline = status.retry_at
        status = await monitor.probe_now("b")  # an operator's probe runs even while open, and does not close it
        assert status.state is HEALTHY and status.breaker is BreakerState.OPEN
        assert status.retry_at == deadline  # published again: the same deadline, not a remainder frozen each time
        status = await monitor.reset_breaker("b")
        assert status.breaker is BreakerState.CLOSED and status.routable
        for call in (
            monitor.record_outcomes("nope", 1, 1, None),
            monitor.probe_now("nope"),
            monitor.reset_breaker("nope"),
        ):
            with pytest.raises(KeyError):
                await call


async def test_apply_config_adds_removes_and_restarts_backends(fleet: Fleet) -> None:
    pa, pb, pc = fleet.port("legacy"), fleet.port("modern"), fleet.port("faulty")
    config = make_config([{"name": "a", "url": url(pa)}, {"name": "b", "url": url(pb)}])
    async with running(config) as (monitor, store):
        await wait_state(store, "a", HEALTHY)
        await wait_state(store, "b", HEALTHY)
        old_b = monitor._backends["b"]
        monitor.apply_config(make_config([{"name": "a", "url": url(pc)}, {"name": "c", "url": url(pb)}]))
        assert set(store.current.backends) == {"a", "c"}
        assert store.current.config.backend("a").url == url(pc)
        await wait_status(
            store, "a", lambda s: s.state is HEALTHY and tool_count(s) == 3, what="a re-probed at its new URL"
        )
        await wait_state(store, "c", HEALTHY)
        await async_wait_until(
            lambda: all(e.task is not None and e.task.done() for e in old_b.endpoints), what="b's probe task ended"
        )
        monitor.apply_config(
            make_config(
                [{"name": "a", "url": url(pc)}, {"name": "c", "url": url(pb)}], health={"unhealthy_threshold": 1}
            )
        )
        assert monitor.config.health.unhealthy_threshold == 1
        assert store.current.backend("a").state is HEALTHY  # an unchanged backend keeps its verdict


async def test_a_planted_token_never_reaches_logs_metrics_or_the_view(
    backends: Backends, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    planted = "tok-PLANTED-7f3a9c2e51"
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "server-token"
    token_file.write_text(planted)
    other_file = tmp_path / "other-token"
    other_file.write_text("something-else")
    started = backends.start_many(
        {"good": ("demo", "--token-file", str(token_file)), "bad": ("demo", "--token-file", str(other_file))}
    )
    good, bad = started["good"][1], started["bad"][1]
    monkeypatch.setenv("PLANTED_TOKEN", planted)
    auth = {"type": "bearer", "token_env": "PLANTED_TOKEN"}
    config = make_config(
        [{"name": "good", "url": url(good), "auth": auth}, {"name": "bad", "url": url(bad), "auth": auth}]
    )
    async with running(config) as (monitor, store):
        await wait_state(store, "good", HEALTHY)
        status = await wait_state(store, "bad", UNAUTHENTICATED)
        assert status.last_error == "authentication_failed"
        await monitor.record_outcomes("good", 0, 1, f"Bearer {planted}")
        await monitor.probe_now("bad")
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "authentication_failed" in logged
    assert planted not in logged
    assert planted not in prometheus_client.generate_latest().decode()
    assert planted not in repr(store.current)
