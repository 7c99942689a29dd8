"""Probe cost benchmark: the control plane's CPU and memory while probing 200 backends every second.

Real processes: `xds-control serve` (health on), a real Envoy connected over ADS (`--no-envoy` to leave it out),
and 200 MCP endpoints served by one lightweight process (bench/health/mcp_stub.py: one asyncio HTTP server per
port, enough of the wire for both protocol families). Half the backends are probed as `protocol: legacy`
(initialize once, then `ping` on the session), half as `auto` (detected modern: one `server/discover` per
probe). Health settings are the defaults but for `interval` (1 s): timeout 10 s, jitter 0.1, catalog refresh
every 300 s (so none falls in the window).

Measured from /proc/<pid>/stat (utime + stime, every thread of the process) and /proc/<pid>/status (VmRSS):
the control plane after a warm-up (every backend healthy, then `--warmup` seconds more), over `--seconds`.
CPU is in % of one core. Probes per second and the mean probe round trip come from the control plane's own
`/metrics` (`xds_control_probe_duration_seconds`), so they count verdicts actually recorded.

`--dead`: every backend URL names a port nothing listens on (a mass outage: each probe is a refused
connection, after which the prober drops its HTTP client). The breaker is then set out of reach, or it would
open after five failures and stop the probing this measures.

Run: .venv/bin/python bench/health/probe_cost.py [--backends 200] [--interval 1] [--seconds 30] [--warmup 10] [--dead]
Targets: under 25 % of one core at 200 backends and a 1 s interval (issue 4); at 1,000 backends and a 10 s
interval (`--backends 1000 --interval 10`, issue 19) under 25 % of one core and a control plane RSS under 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx2

from tests.e2e.support import start_serve, stop_proc, write_config
from tests.support.procs import cpu_seconds, unwind_on_sigterm
from tests.support.stack import stack_config, start_envoy
from tests.support.waiting import free_ports, wait_until
from xds_control.admin.client import AdminClient

HERE = Path(__file__).resolve().parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def probe_totals(metrics_url: str) -> tuple[float, float, float]:
    """(probes recorded, sum of their round trips in s, failed probes) over every backend."""
    text = httpx2.get(metrics_url, timeout=10, trust_env=False).text
    count = sum(
        float(v) for v in re.findall(r"^xds_control_probe_duration_seconds_count\{[^}]*\} (\S+)$", text, re.MULTILINE)
    )
    total = sum(
        float(v) for v in re.findall(r"^xds_control_probe_duration_seconds_sum\{[^}]*\} (\S+)$", text, re.MULTILINE)
    )
    failed = sum(float(v) for v in re.findall(r"^xds_control_probe_failures_total\{[^}]*\} (\S+)$", text, re.MULTILINE))
    return count, total, failed


async def states(target: str) -> dict[str, int]:
    async with AdminClient(target) as client:
        found: dict[str, int] = {}
        for status in await client.list_backends():
            found[str(status.state)] = found.get(str(status.state), 0) + 1
        return found


@dataclass
class Window:
    cpu_percent: float
    cpu_slices: list[float]
    rss_start: float
    rss_end: float
    rss_max: float
    probes_per_second: float
    mean_probe_ms: float
    failed: float
    stub_cpu_percent: float


def measure(cp_pid: int, stub_pid: int, metrics_url: str, seconds: float, slice_seconds: float = 5.0) -> Window:
    """Sample the control plane for `seconds` (blocking; a sampler, not a synchronisation)."""
    rss = [rss_mib(cp_pid)]
    probes0, sum0, failed0 = probe_totals(metrics_url)
    started, cpu0, stub0 = time.monotonic(), cpu_seconds(cp_pid), cpu_seconds(stub_pid)
    slices, slice_at, slice_cpu = [], started, cpu0
    while (now := time.monotonic()) < started + seconds:
        time.sleep(min(1.0, started + seconds - now))
        rss.append(rss_mib(cp_pid))
        if time.monotonic() - slice_at >= slice_seconds - 1e-3:
            cpu, at = cpu_seconds(cp_pid), time.monotonic()
            slices.append((cpu - slice_cpu) / (at - slice_at) * 100)
            slice_at, slice_cpu = at, cpu
    elapsed = time.monotonic() - started
    cpu, stub = cpu_seconds(cp_pid) - cpu0, cpu_seconds(stub_pid) - stub0
    probes1, sum1, failed1 = probe_totals(metrics_url)
    probes = probes1 - probes0
    return Window(
        cpu_percent=cpu / elapsed * 100,
        cpu_slices=slices,
        rss_start=rss[0],
        rss_end=rss[-1],
        rss_max=max(rss),
        probes_per_second=probes / elapsed,
        mean_probe_ms=(sum1 - sum0) / probes * 1000 if probes else float("nan"),
        failed=failed1 - failed0,
        stub_cpu_percent=stub / elapsed * 100,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--no-envoy", action="store_true")
    parser.add_argument("--dead", action="store_true", help="no backend listens: probe cost in a mass outage")
    args = parser.parse_args()
    unwind_on_sigterm()

    stub = subprocess.Popen(
        [sys.executable, str(HERE / "mcp_stub.py"), "--count", str(0 if args.dead else args.backends)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    served = envoy = None
    try:
        assert stub.stdout is not None
        ready = stub.stdout.readline().split()
        ports = free_ports(args.backends) if args.dead else [int(p) for p in ready[1].split(",")]
        backends = [
            {"name": f"b{i:03d}", "url": f"http://127.0.0.1:{port}/mcp", **({"protocol": "legacy"} if i % 2 else {})}
            for i, port in enumerate(ports)
        ]
        sections = {"circuit_breaker": {"failure_threshold": 1_000_000}} if args.dead else {}
        config = stack_config(backends, health={"interval": args.interval}, **sections)
        with tempfile.TemporaryDirectory(prefix="probe-cost-") as tmp:
            served = start_serve(write_config(config, Path(tmp) / "xds-control.yaml"), log_level="warning")
            if not args.no_envoy:
                envoy = start_envoy(config, Path(tmp))
            target = config.control_plane.admin
            started = time.monotonic()
            settled = "unhealthy" if args.dead else "healthy"
            wait_until(
                lambda: asyncio.run(states(target)).get(settled) == args.backends,
                timeout=120,
                interval=0.5,
                what=f"every backend {settled}",
            )
            healthy_after = time.monotonic() - started
            time.sleep(args.warmup)  # warm-up: let first-contact catalog fetches and start-up allocations settle
            metrics_url = f"http://{config.control_plane.metrics}/metrics"
            window = measure(served.popen.pid, stub.pid, metrics_url, args.seconds)
            final = asyncio.run(states(target))
    finally:
        if envoy is not None:
            stop_proc(envoy)
        if served is not None:
            stop_proc(served)
        stub.terminate()
        stub.wait(timeout=10)
        if stub.stdout is not None:
            stub.stdout.close()

    kind = (
        "dead (nothing listens; breaker out of reach)"
        if args.dead
        else "half legacy: ping on a session, half modern: server/discover"
    )
    print(
        f"probe cost: {args.backends} backends ({kind}), interval {args.interval:g} s, jitter 0.1, Envoy {'off' if args.no_envoy else 'connected'}"
    )
    print(
        f"all {settled} {healthy_after:.1f} s after start; warm-up {args.warmup:g} s; window {args.seconds:g} s; final states {final}"
    )
    print(f"control plane CPU: {window.cpu_percent:.1f} % of one core "
          f"(per {5:g} s slice: {', '.join(f'{s:.1f}' for s in window.cpu_slices)}; stdev {statistics.pstdev(window.cpu_slices) if window.cpu_slices else 0:.1f})")  # fmt: skip
    print(
        f"control plane RSS: {window.rss_start:.1f} MiB at the start of the window, {window.rss_end:.1f} MiB at the end, max {window.rss_max:.1f} MiB"
    )
    print(f"probes recorded: {window.probes_per_second:.1f}/s (expected ~{args.backends / args.interval:.0f}/s), "
          f"mean round trip {window.mean_probe_ms:.2f} ms, failed in window: {window.failed:.0f}")  # fmt: skip
    print(f"per probe: {window.cpu_percent / 100 / window.probes_per_second * 1e6:.0f} us of control-plane CPU")
    if not args.dead:
        print(
            f"stub server CPU (the {args.backends} endpoints, for context): {window.stub_cpu_percent:.1f} % of one core"
        )
    print(f"target: under 25 % of one core -> {'met' if window.cpu_percent < 25 else 'NOT met'}")
    rss_mb = window.rss_max * 1.048576
    print(f"RSS target: under 200 MB -> {'met' if rss_mb < 200 else 'NOT met'} (max {rss_mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
