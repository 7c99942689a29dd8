"""Health drives Envoy, end to end: real demo backends, a real Envoy, the control plane with its probes on.

The control plane runs in this process where the test needs its view, and as `xds-control serve` where the
process itself is the point (its output, its gRPC port). Every "no healthy upstream" asserted here is the
control plane's EDS verdict: Envoy's own outlier detection is set out of reach (`support.NO_OUTLIER`), or it
would eject a dead backend after a few of the tests' own requests and answer the same 503 by itself.

Timings are asserted generously (a bound plus 2 s): the figures belong to bench/health/detection.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import prometheus_client
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from mcp import Client

from tests.e2e.support import (
    MODERN_VERSION,
    Backends,
    Gateway,
    backends_fixture,
    detection_bound,
    e2e_config,
    http_get,
    in_process_gateway,
    served_gateway,
    url,
    write_config,
)
from tests.support.stack import envoy_get
from tests.support.waiting import free_port, free_ports
from xds_control.cli import main
from xds_control.config import parse_config
from xds_control.view import BackendStatus

pytestmark = pytest.mark.integration

HEALTHY, DEGRADED, UNHEALTHY, UNAUTHENTICATED = "healthy", "degraded", "unhealthy", "unauthenticated"
WEATHER_TOOLS = frozenset({"get_forecast", "get_current_conditions", "list_alerts"})
GENERIC_TOOLS = frozenset({"echo", "add", "slow"})
SLACK = 2.0  # seconds on top of every theoretical bound: loaded CI machines, not the product, need it


def tool_names(status: BackendStatus) -> frozenset[str]:
    return frozenset(t["name"] for t in status.catalog.tools) if status.catalog is not None else frozenset()


def probe_counts(backend: str) -> tuple[float, float]:
    """(probes, failed probes) of `backend` so far, from the in-process default Prometheus registry."""
    probes = (
        prometheus_client.REGISTRY.get_sample_value("xds_control_probe_duration_seconds_count", {"backend": backend})
        or 0.0
    )
    failed = 0.0
    for family in prometheus_client.REGISTRY.collect():
        if family.name == "xds_control_probe_failures":
            failed += sum(
                s.value for s in family.samples if s.name.endswith("_total") and s.labels.get("backend") == backend
            )
    return probes, failed


def set_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _main_keeping_root_logging(argv: list[str]) -> int:
    """`main` installs root logging on the capture stream of the moment; undo that when it returns."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


async def run_cli(*argv: str) -> int:
    """`xds-control ...` through `xds_control.cli.main`, in a worker thread (it runs `asyncio.run` itself)."""
    async with asyncio.timeout(30):
        return await asyncio.to_thread(_main_keeping_root_logging, list(argv))


async def admin_json(gw: Gateway, capsys: pytest.CaptureFixture[str], *command: str) -> Any:
    """`xds-control admin COMMAND --json` against the gateway's control plane: its parsed output."""
    capsys.readouterr()
    code = await run_cli("admin", *command, "--json", "--address", gw.admin_target)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def row(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for r in rows if r["name"] == name)


# -- a backend dies, comes back, starts late, is replaced --------------------------------------------


async def test_killed_backend_is_unrouted_within_the_bound_and_its_restart_is_routed_with_a_fresh_catalog(
    backends: Backends, tmp_path: Path
) -> None:
    port = free_port()
    proc = await backends.astart("weather", port)
    config = e2e_config([{"name": "weather", "url": url(port)}])
    bound = detection_bound(config.health)
    async with in_process_gateway(config, tmp_path) as gw:
        status = await gw.wait_state("weather", HEALTHY)
        assert tool_names(status) == WEATHER_TOOLS
        await gw.wait_routed("weather")

        killed_at = time.monotonic()
        proc.kill()  # SIGKILL: a crash, no goodbye
        await gw.wait_unrouted("weather", timeout=bound + SLACK)
        detected = time.monotonic() - killed_at
        assert detected <= bound + SLACK, f"Envoy unrouted the dead backend after {detected:.2f}s (bound {bound:.2f}s)"
        assert await gw.eds_health("weather") == ["UNHEALTHY"]
        status = await gw.backend("weather")
        assert status.state == UNHEALTHY and not status.routable and status.last_error == "connection_refused"

        await backends.astart("weather", port, "--tools", "2")  # same port, a bigger catalog
        await gw.wait_routed("weather", timeout=config.health.interval * 2 + SLACK)
        status = await gw.wait_backend(
            "weather", lambda s: tool_names(s) == WEATHER_TOOLS | {"tool_0", "tool_1"}, what="the new catalog"
        )
        assert status.state == HEALTHY and status.routable and status.consecutive_failures == 0
        assert await gw.eds_health("weather") == ["HEALTHY"]


async def test_backend_started_after_the_control_plane_becomes_healthy_and_routable_on_its_own(
    backends: Backends, tmp_path: Path
) -> None:
    port = free_port()
    config = e2e_config([{"name": "late", "url": url(port)}])
    async with in_process_gateway(config, tmp_path) as gw:
        status = await gw.wait_state("late", UNHEALTHY)  # nothing listens yet: a real verdict, not a flap
        assert status.last_error == "connection_refused"
        await gw.wait_unrouted("late")

        await backends.astart("late", port)
        ready_at = time.monotonic()
        await gw.wait_routed("late", timeout=config.health.interval * 2 + SLACK)
        assert time.monotonic() - ready_at <= config.health.interval * (1 + config.health.jitter) + SLACK
        status = await gw.wait_backend("late", lambda s: s.catalog is not None, what="the late backend's catalog")
        assert status.state == HEALTHY and status.routable and tool_names(status) == GENERIC_TOOLS


async def test_backend_replaced_on_the_same_port_recovers_at_the_first_probe_after_it_listens(
    backends: Backends, tmp_path: Path
) -> None:
    """The prober held a legacy session and a keep-alive connection to the old process, and so did Envoy's
    pool. Nothing stale may survive the replacement: the first probe after the new process listens succeeds
    (a fresh connection, a fresh session) and Envoy's next calls reach the new process."""
    port = free_port()
    old = await backends.astart("swap", port, "--family", "legacy")
    config = e2e_config([{"name": "swap", "url": url(port)}])
    async with in_process_gateway(config, tmp_path) as gw:
        status = await gw.wait_state("swap", HEALTHY)
        assert tool_names(status) == GENERIC_TOOLS
        await gw.wait_routed("swap")

        old.kill()
        await backends.astart("swap", port, "--family", "legacy", "--tools", "1")
        probes_at_ready, failures_at_ready = probe_counts("swap")
        status = await gw.wait_backend(
            "swap",
            lambda s: s.state == HEALTHY and tool_names(s) == GENERIC_TOOLS | {"tool_0"},
            timeout=config.health.interval * 2 + SLACK,
        )
        assert status.routable
        probes, failures = probe_counts("swap")
        assert probes > probes_at_ready
        assert failures - failures_at_ready <= 1, "only a probe already under way when the new process bound may fail"

        await gw.wait_routed("swap")
        for _ in range(3):  # real MCP sessions through Envoy's pool, each reaching the new process
            async with Client(gw.egress("swap"), mode="legacy") as client:
                result = await client.call_tool("tool_0", {"value": "after the swap"})
            assert result.content[0].text == "tool_0: after the swap"


# -- families and faults: one shared fleet behind `xds-control serve` ---------------------------------

FLEET_TOKEN = "fleet-backend-secret"
WRONG_TOKEN_ENV = "E2E_FLEET_WRONG_TOKEN"
FLEET: dict[str, tuple[str, ...]] = {
    "legacy": ("weather", "--family", "legacy"),
    "modern": ("weather", "--family", "modern"),
    "hang": ("demo", "--fault", "hang"),
    "garbage": ("demo", "--fault", "garbage"),
    "limited": ("demo", "--fault", "http429"),
    "no-creds": ("demo", "--token", FLEET_TOKEN),  # the config sends no credentials
    "wrong-creds": ("demo", "--token", FLEET_TOKEN),  # the config sends another token
}


@pytest.fixture(scope="class")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Backends that are only looked at, never changed: started once, in parallel with the control plane,
    and stopped as soon as the class is done (a hanging backend keeps the prober busy)."""
    ports = dict(zip(FLEET, free_ports(len(FLEET)), strict=True))
    entries: list[dict[str, Any]] = [{"name": key, "url": url(port)} for key, port in ports.items()]
    entries[list(FLEET).index("wrong-creds")]["auth"] = {"type": "bearer", "token_env": WRONG_TOKEN_ENV}
    config = e2e_config(entries)
    with backends_fixture() as started:
        procs = started.spawn_many({key: (ports[key], spec) for key, spec in FLEET.items()})
        with served_gateway(
            config, tmp_path_factory.mktemp("fleet"), env={WRONG_TOKEN_ENV: "not-the-backend-secret"}
        ) as gw:
            started.wait_ready(procs.values())
            yield gw


class TestFleet:
    @pytest.mark.parametrize(("name", "version"), [("legacy", "2025-11-25"), ("modern", MODERN_VERSION)])
    async def test_both_protocol_families_are_probed_healthy_and_routed(
        self, fleet: Gateway, name: str, version: str
    ) -> None:
        status = await fleet.wait_state(name, HEALTHY, timeout=20)
        assert status.routable  # (last_error may name a start-up race: the fleet boots alongside the control plane)
        assert status.catalog is not None and status.catalog.protocol_version == version
        assert tool_names(status) == WEATHER_TOOLS
        await fleet.wait_eds(name, "HEALTHY")
        async with Client(fleet.egress(name), mode="legacy" if name == "legacy" else MODERN_VERSION) as client:
            result = await client.call_tool("get_current_conditions", {"city": "Oslo"})
        assert "Oslo" in result.content[0].text

    @pytest.mark.parametrize(
        ("name", "state", "error", "eds"),
        [
            ("hang", UNHEALTHY, "timeout", "UNHEALTHY"),
            ("garbage", UNHEALTHY, "protocol_error", "UNHEALTHY"),
            ("limited", DEGRADED, "rate_limited", "DEGRADED"),
            ("no-creds", UNAUTHENTICATED, "authentication_failed", "UNHEALTHY"),
            ("wrong-creds", UNAUTHENTICATED, "authentication_failed", "UNHEALTHY"),
        ],
    )
    async def test_fault_verdicts_reach_envoy(
        self, fleet: Gateway, name: str, state: str, error: str, eds: str
    ) -> None:
        what = f"{name}: {state} ({error})"
        status = await fleet.wait_backend(
            name, lambda s: s.state == state and s.last_error == error, timeout=20, what=what
        )
        assert status.routable is (state == DEGRADED)
        await fleet.wait_eds(name, eds)
        if status.routable:
            # Degraded is routable: Envoy forwards and the backend's own 429 passes through (no 503 in between).
            answer = await fleet.post(name)
            assert (answer.status, answer.text) == (429, "rate limited\n")
        else:
            await fleet.wait_unrouted(name)

    def test_grpc_reflection_of_the_served_control_plane_lists_the_admin_and_health_services(
        self, fleet: Gateway
    ) -> None:
        with grpc.insecure_channel(fleet.admin_target) as channel:  # what `grpcurl -plaintext ADDR list` asks
            database = ProtoReflectionDescriptorDatabase(channel)
            services = set(database.get_services())
            admin = DescriptorPool(database).FindServiceByName("xds_control.admin.v1.Admin")
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert {"xds_control.admin.v1.Admin", "grpc.health.v1.Health"} <= services
        assert {"ListBackends", "Watch", "Drain", "Undrain", "ResetBreaker", "ProbeNow"} <= {
            m.name for m in admin.methods
        }
        assert health.status == health_pb2.HealthCheckResponse.SERVING


# -- the operator's controls: breaker reset, drain, reload --------------------------------------------


async def test_breaker_opened_by_repeated_failures_is_closed_by_admin_reset(
    backends: Backends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fault = tmp_path / "fault"
    set_file(fault, "none")
    port = free_port()
    await backends.astart("flaky", port, "--fault-file", str(fault))
    config = e2e_config(
        [{"name": "flaky", "url": url(port)}],
        circuit_breaker={"failure_threshold": 3, "open_timeout": "60s", "max_open_timeout": "120s"},
    )
    async with in_process_gateway(config, tmp_path) as gw:
        await gw.wait_state("flaky", HEALTHY)
        await gw.wait_routed("flaky")

        set_file(fault, "http500")
        await gw.wait_backend("flaky", lambda s: s.breaker == "open", what="the breaker opens")
        flaky = row(await admin_json(gw, capsys, "backends"), "flaky")
        assert (flaky["breaker"], flaky["state"], flaky["routable"], flaky["last_error"]) == (
            "open",
            UNHEALTHY,
            False,
            "http_5xx",
        )
        assert flaky["consecutive_failures"] >= config.health.unhealthy_threshold
        await gw.wait_unrouted("flaky")

        # The backend is fine again, but an open breaker admits no probes for a minute. An operator's probe runs
        # anyway and sees it answer; the breaker stays open, so Envoy keeps it out.
        set_file(fault, "none")
        probed = await admin_json(gw, capsys, "probe", "flaky")
        assert (probed["state"], probed["breaker"], probed["routable"]) == (HEALTHY, "open", False)
        assert (await gw.post("flaky")).unrouted
        assert await gw.eds_health("flaky") == ["UNHEALTHY"]

        reset = await admin_json(gw, capsys, "reset", "flaky")
        assert (reset["breaker"], reset["routable"]) == ("closed", True)
        await gw.wait_routed("flaky")
        await gw.wait_eds("flaky", "HEALTHY")
        flaky = row(await admin_json(gw, capsys, "backends"), "flaky")
        assert (flaky["breaker"], flaky["state"], flaky["consecutive_failures"]) == ("closed", HEALTHY, 0)


async def test_drain_and_undrain_from_the_cli_flip_envoy(
    backends: Backends, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    await backends.astart("weather", port)
    config = e2e_config([{"name": "weather", "url": url(port)}])
    async with in_process_gateway(config, tmp_path) as gw:
        await gw.wait_state("weather", HEALTHY)
        await gw.wait_routed("weather")

        drained = await admin_json(gw, capsys, "drain", "weather")
        assert (drained["drained"], drained["state"], drained["routable"]) == (True, HEALTHY, False)
        await gw.wait_eds("weather", "DRAINING")
        await gw.wait_unrouted("weather")
        assert row(await admin_json(gw, capsys, "backends"), "weather")["drained"] is True

        undrained = await admin_json(gw, capsys, "undrain", "weather")
        assert (undrained["drained"], undrained["routable"]) == (False, True)
        await gw.wait_eds("weather", "HEALTHY")
        await gw.wait_routed("weather")


async def test_config_reload_routes_an_added_backend_and_unroutes_a_removed_one(
    backends: Backends, tmp_path: Path
) -> None:
    weather_port, calendar_port = free_ports(2)
    await asyncio.to_thread(
        backends.start_many, {"weather": (weather_port, ("weather",)), "calendar": (calendar_port, ("calendar",))}
    )
    config = e2e_config([{"name": "weather", "url": url(weather_port)}])
    path = write_config(config, tmp_path / "xds-control.yaml")
    async with in_process_gateway(config, tmp_path, config_path=path) as gw:
        await gw.wait_routed("weather")
        assert (await gw.post("calendar")).status == 404

        data = config.model_dump(mode="json")
        data["backends"].append({"name": "calendar", "url": url(calendar_port)})
        write_config(parse_config(data), path)
        await gw.wait_routed("calendar")
        status = await gw.wait_state("calendar", HEALTHY)
        assert tool_names(status) == {"list_events", "create_event", "find_free_slot"}

        data["backends"] = [b for b in data["backends"] if b["name"] != "weather"]
        write_config(parse_config(data), path)
        await gw.wait_answer("weather", lambda a: a.status == 404, what="the removed backend's route is gone")
        assert "weather" not in gw.plane.store.current.backends  # type: ignore[union-attr]
        assert (await gw.post("calendar")).status == 200
        _, clusters = await asyncio.to_thread(envoy_get, config, "/clusters")
        assert "weather::" not in clusters and "calendar::" in clusters


# -- credentials --------------------------------------------------------------------------------------

PLANTED = "sk-planted-XYZ123"
PLANTED_ENV = "PLANTED_TOKEN_ENV"


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_planted_token_appears_nowhere_after_failures_and_recoveries(
    backends: Backends, tmp_path: Path, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    """The control plane sends the planted token on every probe, through timeouts, rejections, a crash and
    recoveries, at debug level; then every place an operator can look is searched for it."""
    server_token, fault = tmp_path / "server-token", tmp_path / "fault"
    set_file(server_token, PLANTED)
    set_file(fault, "none")
    secure_port, stranger_port = free_ports(2)
    secure_args = ("--token-file", str(server_token), "--fault-file", str(fault))
    procs = backends.spawn_many(
        {
            "secure": (secure_port, ("secure", *secure_args)),
            "stranger": (stranger_port, ("stranger", "--token", "another-secret")),
        }
    )
    auth = {"type": "bearer", "token_env": PLANTED_ENV}
    config = e2e_config(
        [
            {"name": "secure", "url": url(secure_port), "auth": auth},
            {"name": "stranger", "url": url(stranger_port), "auth": auth},
        ]
    )
    found: dict[str, str] = {}
    with served_gateway(config, tmp_path, env={PLANTED_ENV: PLANTED}, log_format=log_format, log_level="debug") as gw:
        backends.wait_ready(procs.values())
        await gw.wait_state("secure", HEALTHY, timeout=20)
        status = await gw.wait_state("stranger", UNAUTHENTICATED, timeout=20)  # the planted token, sent and refused
        assert status.last_error == "authentication_failed"
        await gw.wait_routed("secure", headers={"authorization": f"Bearer {PLANTED}"})  # clients bring their own token

        for mode, state, error in (("hang", UNHEALTHY, "timeout"), ("none", HEALTHY, "timeout")):
            set_file(fault, mode)
            await gw.wait_backend(
                "secure",
                lambda s, st=state, e=error: s.state == st and s.last_error == e,
                timeout=15,
                what=f"secure {state}",
            )
        for token, state in (("rotated-elsewhere", UNAUTHENTICATED), (PLANTED, HEALTHY)):
            set_file(server_token, token)
            await gw.wait_backend(
                "secure",
                lambda s, st=state: s.state == st and s.last_error == "authentication_failed",
                timeout=15,
                what=f"secure {state}",
            )
        procs["secure"].kill()
        await gw.wait_backend(
            "secure",
            lambda s: s.state == UNHEALTHY and s.last_error == "connection_refused",
            timeout=15,
            what="secure down",
        )
        await asyncio.to_thread(backends.start, "secure", secure_port, *secure_args)
        await gw.wait_state("secure", HEALTHY, timeout=15)

        found["admin backends --json"] = json.dumps(await admin_json(gw, capsys, "backends"))
        found["admin probe --json"] = json.dumps(await admin_json(gw, capsys, "probe", "stranger"))
        found["admin watch --json --count 2"] = await watch_two_updates(gw, capsys)
        found["metrics"] = await asyncio.to_thread(http_get, f"http://{config.control_plane.metrics}/metrics")
        found["envoy config_dump"] = (await asyncio.to_thread(envoy_get, config, "/config_dump?include_eds"))[1]
        found["envoy clusters"] = (await asyncio.to_thread(envoy_get, config, "/clusters"))[1]
    served = gw.served
    assert served is not None
    found["control plane output"] = served.output  # stdout and stderr, through shutdown

    for where, text in found.items():
        assert PLANTED not in text and "XYZ123" not in text, f"the planted token leaked into {where}"
    # ... and each place really was looked at with the failures in it.
    logs = found["control plane output"]
    for category in ("timeout", "authentication_failed", "connection_refused"):
        assert category in logs, f"no {category} transition in the logs"
        assert f'category="{category}"' in found["metrics"]
    assert "xds_control.health" in logs
    lines = [line for line in logs.splitlines() if line.strip() and not line.startswith("READY ")]
    if log_format == "json":
        assert all(json.loads(line)["level"] for line in lines), "every log line is one JSON object"
    else:
        assert not any(line.startswith("{") for line in lines)


async def watch_two_updates(gw: Gateway, capsys: pytest.CaptureFixture[str]) -> str:
    """`admin watch --json --count 2`: the full view, then one change (drain/undrain toggled until it arrives)."""
    capsys.readouterr()
    watch = asyncio.create_task(run_cli("admin", "watch", "--json", "--count", "2", "--address", gw.admin_target))
    drained = False
    try:
        deadline = time.monotonic() + 20
        while not watch.done():
            assert time.monotonic() < deadline, "admin watch did not see two updates"
            drained = not drained
            await run_cli("admin", "drain" if drained else "undrain", "secure", "--address", gw.admin_target)
            await asyncio.wait({watch}, timeout=0.2)
        assert watch.result() == 0
    finally:
        if drained:
            await run_cli("admin", "undrain", "secure", "--address", gw.admin_target)
    out = capsys.readouterr().out
    updates = [json.loads(line) for line in out.splitlines() if line.startswith('{"version"')]
    assert len(updates) == 2 and updates[1]["version"] > updates[0]["version"]
    return out
