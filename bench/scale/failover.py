"""Control plane failover under steady load: failed client calls, and how long until a health flip reaches
Envoy again.

Real processes from one config file: `--planes` `xds-control serve` (the second with its own `--xds/--admin/
--metrics`), one Envoy whose bootstrap lists every control plane in failover order, one `xds-control
aggregator` following the same list, demo backends `alpha` (called) and `beta` (flipped). Steady load:
`--modern` 2026-07-28 and `--legacy` legacy clients calling alpha's echo through Envoy's `/mcp`
(tests/support/load.py: every call checked; a legacy client whose call fails re-initializes).

Each round: the active control plane is SIGKILLed, and at once `beta` is drained on the control plane that
takes over (with one control plane: on the same one, restarted at once). The figure is the time from the kill
to Envoy holding beta DRAINING (its admin /clusters, polled every 10 ms): Envoy noticed, reconnected, and
took the new control plane's push. Then beta is undrained, the killed control plane restarted (it starts warm)
and the next round, once Envoy's health check sees it up again, kills whichever is active then. Failed calls are counted over every round (goal: 0).

Run: .venv/bin/python bench/scale/failover.py [--planes 2] [--rounds 5] [--modern 4] [--legacy 4]
Goal: 0 failed calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.load import CallLoad
from tests.support.procs import demo_backend, unwind_on_sigterm
from tests.support.scaled import ScaledStack, scaled_config
from tests.support.stack import admin_get
from tests.support.waiting import async_wait_until, free_ports
from xds_control.admin.client import AdminClient


async def _eds(stack: ScaledStack, cluster: str) -> list[str]:
    status, body = await asyncio.to_thread(admin_get, stack.config.envoy.admin_port, "/clusters?format=json", 2.0)
    if status != 200:
        return []
    for entry in json.loads(body).get("cluster_statuses", []):
        if entry["name"] == cluster:
            return [h.get("health_status", {}).get("eds_health_status", "") for h in entry.get("host_statuses", [])]
    return []


async def _serving(admin: str, node: str) -> bool:
    try:
        async with AdminClient(admin) as client:
            return any(n.node_id == node for n in await client.nodes())
    except Exception:
        return False


async def _active(stack: ScaledStack) -> int:
    node = stack.config.envoy.node_id
    for i, plane in enumerate(stack.planes):
        if f"plane-{i}" in stack.procs and stack.procs[f"plane-{i}"].alive() and await _serving(plane.admin, node):
            return i
    raise RuntimeError("no control plane serves Envoy")


async def _drain(admin: str, name: str, drained: bool) -> None:
    """Drain (or undrain) on `admin`, retrying until it answers (a control plane just restarted)."""

    async def once() -> bool:
        try:
            async with AdminClient(admin) as client:
                await (client.drain(name) if drained else client.undrain(name))
            return True
        except Exception:
            return False

    await async_wait_until(once, timeout=60, interval=0.005, what=f"{'drain' if drained else 'undrain'} on {admin}")


async def one_round(stack: ScaledStack) -> float:
    """Kill the active control plane; the seconds until a flip made on its successor reaches Envoy."""
    active = await _active(stack)
    survivor = (active + 1) % len(stack.planes)
    started = time.perf_counter()
    stack.kill(f"plane-{active}")
    if survivor == active:
        await asyncio.to_thread(stack.start_plane, active)
    await _drain(stack.planes[survivor].admin, "beta", True)

    async def drained() -> bool:
        return await _eds(stack, "beta") == ["DRAINING"]

    await async_wait_until(drained, timeout=120, interval=0.01, what="the flip reaches Envoy")
    elapsed = time.perf_counter() - started
    await _drain(stack.planes[survivor].admin, "beta", False)
    await async_wait_until(lambda: _eds_not_draining(stack), timeout=60, what="beta undrained in Envoy")
    if survivor != active:
        await asyncio.to_thread(stack.start_plane, active)  # back, warm; Envoy stays on the survivor
        address = stack.planes[active].xds
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: _xds_hosts(stack).get(address) == "healthy"),
            timeout=60,
            what="Envoy sees the restarted control plane healthy",
        )  # rounds are independent: the next kill finds every control plane up, as a real failure would
    return elapsed


def _xds_hosts(stack: ScaledStack) -> dict[str, str]:
    """Envoy's ADS cluster: control plane address -> its health flags."""
    _status, body = admin_get(stack.config.envoy.admin_port, "/clusters")
    hosts = {}
    for line in body.splitlines():
        parts = line.split("::")
        if parts[0] == "xds_cluster" and len(parts) == 4 and parts[2] == "health_flags":
            hosts[parts[1]] = parts[3]
    return hosts


async def _eds_not_draining(stack: ScaledStack) -> bool:
    return (await _eds(stack, "beta")) not in ([], ["DRAINING"])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planes", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modern", type=int, default=4)
    parser.add_argument("--legacy", type=int, default=4)
    args = parser.parse_args()
    unwind_on_sigterm()
    alpha_port, beta_port = free_ports(2)
    backends = [demo_backend("alpha", alpha_port), demo_backend("beta", beta_port)]
    config, planes = scaled_config(
        [
            {"name": "alpha", "url": f"http://127.0.0.1:{alpha_port}/mcp"},
            {"name": "beta", "url": f"http://127.0.0.1:{beta_port}/mcp"},
        ],
        control_planes=args.planes,
        health={"interval": 1.0, "timeout": 1.0},
    )
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="failover-") as tmp:
        stack = ScaledStack(config, planes, Path(tmp))
        load = CallLoad(stack.mcp_url, "alpha_echo", modern=args.modern, legacy=args.legacy)
        try:
            await stack.start()
            await load.start()
            await async_wait_until(lambda: load.each_ok(3), timeout=60, what="steady load")
            for i in range(args.rounds):
                failed_before = load.stats.failed
                elapsed = await one_round(stack)
                times.append(elapsed)
                print(
                    f"round {i + 1}: kill -> flip in Envoy {elapsed * 1000:.0f} ms, "
                    f"failed calls {load.stats.failed - failed_before}",
                    flush=True,
                )
            stats = await load.stop()
        finally:
            await load.stop()
            stack.stop()
            for backend in backends:
                backend.stop()
    seconds = stats.stopped - stats.started
    print(
        f"control planes={args.planes} rounds={args.rounds} clients: {args.modern} modern + {args.legacy} legacy; "
        f"calls {stats.ok + stats.failed} ({(stats.ok + stats.failed) / seconds:.0f}/s)"
    )
    print(
        f"kill -> a new flip reaches Envoy: median {statistics.median(times) * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms"
    )
    print(f"failed calls: {stats.failed} (goal 0) -> {'met' if stats.failed == 0 else 'NOT met'}")
    for failure in stats.failures[:10]:
        print(f"  {failure.worker}: {failure.what}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
