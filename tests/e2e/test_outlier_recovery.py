"""A recovery the control plane sees beats Envoy's outlier ejection: real demo backend, real Envoy, the control plane
in-process with its probes on, and Envoy's outlier detection switched ON (the other e2e tests keep it out of reach).

Envoy ejects a host after a few failed requests and keeps it out for `base_ejection_time` × its ejection count,
whatever EDS says. The control plane pushes an endpoint it holds unroutable in a locality of its own, so its
recovery arrives as a new host without the ejection (docs/dev/health.md, "Recovery and Envoy's outlier
detection"). `base_ejection_time` is a minute here; every recovery must route within a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import Backends, Gateway, e2e_config, in_process_gateway, url
from tests.support.stack import envoy_get
from tests.support.waiting import async_wait_until, free_port
from xds_control.xds.resources import UNROUTABLE_LOCALITY

pytestmark = pytest.mark.integration

HEALTHY, UNHEALTHY = "healthy", "unhealthy"
BASE_EJECTION = 60.0
RECOVERY_DEADLINE = 5.0  # from the control plane's routable verdict to a 200 through Envoy; far below BASE_EJECTION
# Probes slow enough that a few requests through Envoy eject the host before the control plane's verdict (three
# failed probes a second apart) unroutes it, as with a client hammering a backend that just died.
HEALTH = {"interval": 1.0, "timeout": 1.0, "unhealthy_threshold": 3, "healthy_threshold": 1, "jitter": 0.1}
OUTLIER = {
    "consecutive_5xx": 3,
    "consecutive_gateway_failure": 3,
    "interval": "10s",
    "base_ejection_time": f"{BASE_EJECTION:g}s",
}


def set_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def envoy_hosts(gw: Gateway, name: str) -> list[dict[str, Any]]:
    """Envoy's hosts of cluster `name` from `/clusters?format=json`: their `health_status` flags and `locality`."""
    status, body = await asyncio.to_thread(envoy_get, gw.config, "/clusters?format=json")
    assert status == 200, body
    for entry in json.loads(body).get("cluster_statuses", []):
        if entry["name"] == name:
            return list(entry.get("host_statuses", []))
    return []


async def ejections_active(gw: Gateway, name: str) -> int:
    status, body = await asyncio.to_thread(
        envoy_get, gw.config, f"/stats?filter=^cluster\\.{name}\\.outlier_detection\\.ejections_active$"
    )
    assert status == 200, body
    return int(body.split(":")[1]) if ":" in body else 0


def ejected(hosts: list[dict[str, Any]]) -> bool:
    return len(hosts) == 1 and bool(hosts[0]["health_status"].get("failed_outlier_check"))


async def eject_by_requests(gw: Gateway, name: str) -> None:
    """Send requests through Envoy until its outlier detection ejects the (sole) host; the control plane must still
    hold it routable then (EDS HEALTHY), or this is not the race the tests are about."""

    async def condition() -> bool:
        hosts = await envoy_hosts(gw, name)
        if ejected(hosts):
            return True
        assert hosts and hosts[0]["health_status"].get("eds_health_status") == "HEALTHY", (
            f"unrouted before any ejection: {hosts}"
        )
        await gw.post(name)
        return False

    await async_wait_until(condition, timeout=10, interval=0, what=f"Envoy ejects {name}")
    assert await ejections_active(gw, name) == 1
    # The ejection alone keeps it out now (once Envoy's main thread has handed the new host set to its worker).
    await gw.wait_unrouted(name, timeout=5)


async def assert_held_out_fresh(gw: Gateway, name: str) -> None:
    """While unroutable the endpoint sits in the unroutable locality as a new host: UNHEALTHY, not ejected."""
    await gw.wait_eds(name, "UNHEALTHY")
    (host,) = await envoy_hosts(gw, name)
    assert host["locality"] == UNROUTABLE_LOCALITY
    assert not host["health_status"].get("failed_outlier_check")
    assert await ejections_active(gw, name) == 0


async def assert_routed_promptly(gw: Gateway, name: str) -> float:
    """Once the control plane holds `name` healthy, Envoy answers 200 within RECOVERY_DEADLINE; returns how long it took."""
    await gw.wait_state(name, HEALTHY, timeout=10)
    verdict_at = time.monotonic()
    await gw.wait_routed(name, timeout=RECOVERY_DEADLINE)
    took = time.monotonic() - verdict_at
    (host,) = await envoy_hosts(gw, name)
    assert host.get("locality", {}) == {} and not host["health_status"].get("failed_outlier_check"), host
    return took


async def test_backend_ejected_as_it_died_is_routed_within_one_push_of_its_recovery(
    backends: Backends, tmp_path: Path
) -> None:
    port = free_port()
    proc = await backends.astart("weather", port)
    config = e2e_config([{"name": "weather", "url": url(port)}], health=HEALTH, outlier_detection=OUTLIER)
    async with in_process_gateway(config, tmp_path) as gw:
        await gw.wait_state("weather", HEALTHY)
        await gw.wait_routed("weather")

        proc.kill()  # clients keep calling: connect failures eject the host before the probes' verdict
        await eject_by_requests(gw, "weather")
        await gw.wait_state("weather", UNHEALTHY, timeout=10)
        await assert_held_out_fresh(gw, "weather")

        await backends.astart("weather", port)  # back on the same address, long before a minute's ejection ends
        took = await assert_routed_promptly(gw, "weather")
        assert took < RECOVERY_DEADLINE < BASE_EJECTION


async def test_backend_ejected_for_5xx_is_routed_on_recovery_and_stays_ejectable(
    backends: Backends, tmp_path: Path
) -> None:
    fault = tmp_path / "fault"
    set_file(fault, "none")
    port = free_port()
    await backends.astart("flaky", port, "--fault-file", str(fault))
    config = e2e_config([{"name": "flaky", "url": url(port)}], health=HEALTH, outlier_detection=OUTLIER)
    async with in_process_gateway(config, tmp_path) as gw:
        await gw.wait_state("flaky", HEALTHY)
        await gw.wait_routed("flaky")

        for _ in range(2):  # the host Envoy routes to after a recovery is ejected again by the next burst of 5xx
            set_file(fault, "http500")
            await eject_by_requests(gw, "flaky")
            await gw.wait_state("flaky", UNHEALTHY, timeout=10)
            await assert_held_out_fresh(gw, "flaky")

            set_file(fault, "none")
            await assert_routed_promptly(gw, "flaky")


async def test_ejection_outlives_good_probes_while_the_verdict_never_left_routable(
    backends: Backends, tmp_path: Path
) -> None:
    """Outlier detection stays the backup: the data path failed while the verdict stayed healthy (the failures never
    reached the threshold), so nothing tells Envoy to forget the ejection."""
    fault = tmp_path / "fault"
    set_file(fault, "none")
    port = free_port()
    await backends.astart("flaky", port, "--fault-file", str(fault))
    config = e2e_config(
        [{"name": "flaky", "url": url(port)}],
        health={**HEALTH, "interval": 0.25, "unhealthy_threshold": 1000},
        outlier_detection=OUTLIER,
    )
    async with in_process_gateway(config, tmp_path) as gw:
        await gw.wait_state("flaky", HEALTHY)
        await gw.wait_routed("flaky")

        set_file(fault, "http500")
        await eject_by_requests(gw, "flaky")
        await gw.wait_backend("flaky", lambda s: s.consecutive_failures >= 1, what="a failed probe")
        set_file(fault, "none")
        await gw.wait_backend("flaky", lambda s: s.consecutive_successes >= 4, what="good probes again")

        status = await gw.backend("flaky")
        assert status.state == HEALTHY and status.routable
        assert ejected(await envoy_hosts(gw, "flaky"))
        assert (await gw.post("flaky")).unrouted
