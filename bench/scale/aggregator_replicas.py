"""Aggregator replicas: tools/call throughput through Envoy's `/mcp` with 1, 2 and 3 aggregators.

Real processes: `xds-control serve`, one Envoy, N `xds-control aggregator --replica i` (`aggregator.replicas:
N`: Envoy's `/mcp` cluster spreads over them), and one lightweight MCP backend (bench/health/mcp_stub.py: an
echo tool on a raw asyncio server, so the backend is not what limits). The load: `--concurrency` 2026-07-28
clients (tests/support/load.py on `xds_control.http11`, each call checked), after a warm-up, over a window of
`--seconds`. Printed per N: calls/s, the scaling factor against one aggregator, failed calls, and the CPU
(% of one core) of the aggregators together, Envoy, the control plane, the backend and the load generator:
on a machine with few cores the replicas share them with everything else, which bounds the factor.

Run: .venv/bin/python bench/scale/aggregator_replicas.py [--replicas 1,2,3] [--concurrency 64] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.load import CallLoad
from tests.support.procs import cpu_seconds, unwind_on_sigterm
from tests.support.scaled import ScaledStack, scaled_config

HERE = Path(__file__).resolve().parent


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def measure(replicas: int, concurrency: int, seconds: float, warmup: float, backend_port: int) -> dict:
    config, planes = scaled_config(
        [{"name": "alpha", "url": f"http://127.0.0.1:{backend_port}/mcp"}], replicas=replicas
    )
    with tempfile.TemporaryDirectory(prefix="replicas-") as tmp:
        stack = ScaledStack(config, planes, Path(tmp))
        load = CallLoad(stack.mcp_url, "alpha_echo", modern=concurrency, legacy=0)
        try:
            await stack.start()
            await load.start()
            await asyncio.sleep(warmup)  # a sampler's warm-up, not a synchronisation
            pids = {name: proc.popen.pid for name, proc in stack.procs.items()}
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            ok0, failed0, self0, t0 = load.stats.ok, load.stats.failed, _self_cpu(), time.monotonic()
            await asyncio.sleep(seconds)  # the measuring window
            elapsed = time.monotonic() - t0
            ok, failed, self_cpu = load.stats.ok - ok0, load.stats.failed - failed0, _self_cpu() - self0
            cpu = {name: (cpu_seconds(pid) - cpu0[name]) / elapsed * 100 for name, pid in pids.items()}
        finally:
            await load.stop()
            stack.stop()
    return {
        "replicas": replicas,
        "calls_per_s": ok / elapsed,
        "failed": failed,
        "aggregators_cpu": sum(v for k, v in cpu.items() if k.startswith("aggregator")),
        "envoy_cpu": cpu.get("envoy", 0.0),
        "plane_cpu": cpu.get("plane-0", 0.0),
        "generator_cpu": self_cpu / elapsed * 100,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    unwind_on_sigterm()
    stub = subprocess.Popen(
        [sys.executable, str(HERE.parent / "health" / "mcp_stub.py"), "--count", "1"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    results = []
    try:
        assert stub.stdout is not None
        port = int(stub.stdout.readline().split()[1])
        stub_cpu0, t0 = cpu_seconds(stub.pid), time.monotonic()
        for n in (int(r) for r in args.replicas.split(",")):
            r = await measure(n, args.concurrency, args.seconds, args.warmup, port)
            results.append(r)
            base = results[0]["calls_per_s"]
            print(
                f"aggregators={r['replicas']} concurrency={args.concurrency}: {r['calls_per_s']:.0f} calls/s "
                f"(x{r['calls_per_s'] / base:.2f} of {results[0]['replicas']}), failed {r['failed']}; CPU % of a core: "
                f"aggregators {r['aggregators_cpu']:.0f}, envoy {r['envoy_cpu']:.0f}, control plane {r['plane_cpu']:.0f}, "
                f"load generator {r['generator_cpu']:.0f}",
                flush=True,
            )
        stub_cpu = (cpu_seconds(stub.pid) - stub_cpu0) / (time.monotonic() - t0) * 100
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    print(f"backend stub CPU over the whole run: {stub_cpu:.0f} % of a core; machine: {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
