"""xDS push benchmark against a real Envoy.

1. View flip -> Envoy ACK latency of one EDS health flip (median, p99) with 1, 100 and 500 backends.
   Measured from the view change (snapshot build included) to the ACK arriving at the control plane.
2. Cold start: time from starting Envoy to /ready with all 500 clusters active.

Run: .venv/bin/python bench/xds_push.py [--flips 200] [--sizes 1,100,500]
Target (issue 2): median flip ACK under 20 ms at 500 backends.
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

from tests.support.stack import async_start_envoy, envoy_get, running_control_plane, stack_config
from tests.support.waiting import async_wait_until
from xds_control.view import BackendState
from xds_control.xds import typeurls as t


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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flips", type=int, default=200)
    parser.add_argument("--sizes", default="1,100,500")
    parser.add_argument("--cold", type=int, default=500)
    args = parser.parse_args()
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


if __name__ == "__main__":
    asyncio.run(main())
