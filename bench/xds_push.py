"""xDS push benchmark against a real Envoy.

1. View flip -> Envoy ACK latency of one EDS health flip (median, p99) with 1, 100, 500 and 1,000 backends.
   Measured from the view change (snapshot build included) to the ACK arriving at the control plane.
2. Cold start: time from starting Envoy to /ready, and to all 1,000 clusters active.
3. Many Envoys (`--envoys 50`): that many real Envoys on one control plane, each its own node (node id, admin
   and listener ports in its node metadata, as `xds-control bootstrap --node-id --listener-port ...` writes),
   `--envoy-backends` backends; one EDS flip -> every Envoy has ACKed it (median, p99).

State of the world only: the figures below are met without incremental (Delta) xDS, which is not served.

Run: .venv/bin/python bench/xds_push.py [--flips 200] [--sizes 1,100,500,1000] [--cold 1000] [--envoys 50]
Targets: median flip ACK under 20 ms at 500 backends (issue 2) and under 50 ms at 1,000; cold start to every
cluster active under 3 s at 1,000; a flip ACKed by all of 50 Envoys under 200 ms median (issue 19).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.procs import unwind_on_sigterm
from tests.support.stack import async_start_envoy, envoy_get, running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_ports
from xds_control.view import BackendState
from xds_control.xds import typeurls as t
from xds_control.xds.bootstrap import NodeOverrides


def _backends(n: int) -> list[dict]:
    # Endpoints need not exist: the control plane's probes are off and Envoy only needs addresses.
    return [{"name": f"b{i}", "url": f"http://127.0.0.1:{20000 + i}/mcp"} for i in range(n)]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def flip_latency(n: int, flips: int, workdir: Path) -> dict[str, float]:
    config = stack_config(_backends(n))
    async with running_control_plane(config) as plane:
        envoy = await async_start_envoy(config, workdir / f"flip-{n}", timeout=120)
        try:
            acked: asyncio.Queue[str] = asyncio.Queue()
            plane.nodes.ack_listeners.append(
                lambda _node, type_url, version, _lat: acked.put_nowait(version) if type_url == t.ENDPOINT else None
            )
            samples = []
            for i in range(flips):
                name = f"b{i % n}"
                state = BackendState.UNHEALTHY if (i // n) % 2 == 0 else BackendState.HEALTHY
                while not acked.empty():
                    acked.get_nowait()
                started = time.perf_counter()
                plane.store.set_state(name, state)
                want = plane.cache.current.version(t.ENDPOINT)
                while (await asyncio.wait_for(acked.get(), timeout=10)) != want:
                    pass
                samples.append((time.perf_counter() - started) * 1000)
            return {
                "backends": n,
                "flips": flips,
                "median_ms": statistics.median(samples),
                "p99_ms": _pct(samples, 0.99),
                "max_ms": max(samples),
            }
        finally:
            envoy.stop()


async def cold_start(n: int, workdir: Path) -> dict[str, float]:
    config = stack_config(_backends(n))
    async with running_control_plane(config) as plane:
        assert plane.cache.current is not None
        started = time.perf_counter()
        envoy = await async_start_envoy(config, workdir / "cold", timeout=120)
        ready = time.perf_counter() - started

        async def all_clusters() -> bool:
            status, body = await asyncio.to_thread(envoy_get, config, "/clusters?format=json")
            return status == 200 and len(json.loads(body).get("cluster_statuses", [])) >= n + 2

        try:
            await async_wait_until(all_clusters, timeout=120, interval=0.01, what="all clusters active")
            active = time.perf_counter() - started
            return {"clusters": n, "envoy_ready_s": ready, "all_clusters_active_s": active}
        finally:
            envoy.stop()


async def many_envoys(count: int, backends: int, flips: int, workdir: Path) -> dict[str, float]:
    """`count` Envoys, each its own node and ports, on one in-process control plane; a flip -> all ACKed."""
    config = stack_config(_backends(backends))
    async with running_control_plane(config) as plane:
        envoys = []
        try:
            started = time.perf_counter()
            for i in range(count):
                p = free_ports(3)
                node = NodeOverrides(f"envoy-{i}", admin_port=p[0], listener_port=p[1], egress_port=p[2])
                envoys.append(await async_start_envoy(config, workdir / f"envoy-{i}", node=node, timeout=120))
            fleet_ready = time.perf_counter() - started
            acked: dict[str, str] = {}
            everyone: asyncio.Event = asyncio.Event()
            want = [""]

            def on_ack(node: str, type_url: str, version: str, _latency: float) -> None:
                if type_url == t.ENDPOINT:
                    acked[node] = version
                    if version == want[0] and sum(v == want[0] for v in acked.values()) == count:
                        everyone.set()

            plane.nodes.ack_listeners.append(on_ack)
            current = plane.cache.current.version(t.ENDPOINT)
            await async_wait_until(
                lambda: sum(n.acked.get("eds") == current for n in plane.nodes.nodes()) == count,
                timeout=60,
                what="every Envoy on the current EDS version",
            )
            samples = []
            for i in range(flips):
                name = f"b{i % backends}"
                state = BackendState.UNHEALTHY if (i // backends) % 2 == 0 else BackendState.HEALTHY
                everyone.clear()
                t0 = time.perf_counter()
                plane.store.set_state(name, state)
                want[0] = plane.cache.current.version(t.ENDPOINT)
                await asyncio.wait_for(everyone.wait(), timeout=30)
                samples.append((time.perf_counter() - t0) * 1000)
            return {
                "envoys": count,
                "backends": backends,
                "flips": flips,
                "fleet_ready_s": fleet_ready,
                "median_ms": statistics.median(samples),
                "p99_ms": _pct(samples, 0.99),
                "max_ms": max(samples),
            }
        finally:
            for envoy in envoys:
                envoy.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flips", type=int, default=200)
    parser.add_argument("--sizes", default="1,100,500,1000")
    parser.add_argument("--cold", type=int, default=1000)
    parser.add_argument("--envoys", type=int, default=0, help="also: this many Envoys on one control plane")
    parser.add_argument("--envoy-backends", type=int, default=10)
    parser.add_argument("--envoy-flips", type=int, default=50)
    args = parser.parse_args()
    unwind_on_sigterm()
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            r = await flip_latency(n, args.flips, Path(tmp))
            print(
                f"flip->ACK  backends={r['backends']:4d} flips={r['flips']}  median={r['median_ms']:.2f} ms  p99={r['p99_ms']:.2f} ms  max={r['max_ms']:.2f} ms",
                flush=True,
            )
        r = await cold_start(args.cold, Path(tmp))
        print(
            f"cold start clusters={r['clusters']}  envoy /ready={r['envoy_ready_s']:.2f} s  all clusters active={r['all_clusters_active_s']:.2f} s",
            flush=True,
        )
        if args.envoys:
            m = await many_envoys(args.envoys, args.envoy_backends, args.envoy_flips, Path(tmp))
            print(
                f"many Envoys envoys={m['envoys']} backends={m['backends']} flips={m['flips']}  "
                f"flip->all ACKed median={m['median_ms']:.2f} ms  p99={m['p99_ms']:.2f} ms  max={m['max_ms']:.2f} ms  "
                f"(fleet started in {m['fleet_ready_s']:.1f} s)",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
