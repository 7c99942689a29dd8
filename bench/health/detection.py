"""Detection benchmark: how long from a backend dying (or coming back) to Envoy routing accordingly.

Real processes: `xds-control serve` (health probes on), a real Envoy, one demo MCP backend. The bench polls
Envoy's egress route `/backends/bench/mcp` every few milliseconds with a modern `server/discover` request and
timestamps the switch; it also follows the admin Watch stream to split each figure into "probes until the
verdict" and "verdict -> Envoy" (EDS push, ACK, routing change).

1. kill -> 503: the backend is SIGKILLed right after one of its probes was recorded (the control plane's
   `xds_control_probe_duration_seconds_count` went up): the worst phase, so the figure is the bound plus
   what the product adds. Done when Envoy answers 503 "no healthy upstream".
   Bound: interval x unhealthy_threshold. The next probe is due one interval after the last good one
   (jitter 0 here); it and the ones after fail at once (connection refused), and the verdict comes at the
   `unhealthy_threshold`-th failure.
2. restart -> 200: a new process on the same port prints READY (it accepts connections); done when Envoy
   answers 200. The phase is random (the restart is not aligned to the probe schedule).
   Bound: interval x healthy_threshold. An unhealthy endpoint is probed at the full interval: the tracker's
   fast retries (1 s, 2 s, ... backoff) apply only to an endpoint still `unknown` after start-up, not to a
   recovering one, so the first good probe comes at most one interval after READY. With healthy_threshold 1
   it makes the backend healthy; with more it makes it `degraded` (recovering), which is routable, so Envoy
   routes after the first good probe either way and the view says `healthy` after `healthy_threshold`
   probes (both are printed).

Settings: health interval 1 s (configurable), jitter 0 (so the bound is exact), timeout 1 s, Envoy's outlier
detection and the control plane's breaker set out of reach (both would otherwise act on their own: outlier
detection would eject the dead host after a few of the bench's own requests; the breaker would open after
five failures and hold probing for open_timeout). Percentiles are nearest-rank.

Run: .venv/bin/python bench/health/detection.py [--runs 10] [--interval 1] [--unhealthy-threshold 3] [--healthy-threshold 1]
Target: median within 100 ms of each bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx2  # noqa: E402

from tests.e2e.support import DISCOVER, DISCOVER_HEADERS, NO_HEALTHY_UPSTREAM, NO_OUTLIER, start_serve, stop_proc, write_config  # noqa: E402
from tests.support.stack import async_start_envoy, stack_config  # noqa: E402
from tests.support.waiting import free_port  # noqa: E402
from xds_control.admin.client import AdminClient  # noqa: E402
from xds_control.config import Config  # noqa: E402

NAME = "bench"
POLL = 0.005  # seconds between two requests to Envoy


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Backend:
    """The demo backend as an asyncio child process, its READY line timestamped as it is read."""

    port: int
    proc: asyncio.subprocess.Process | None = None
    ready_at: float = 0.0

    async def start(self) -> float:
        root = Path(__file__).resolve().parents[2]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "examples.backends.demo_server", "--name", NAME, "--port", str(self.port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL, cwd=str(root),
            start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            while not (line := await self.proc.stdout.readline()).startswith(b"READY"):
                if not line:
                    raise RuntimeError("the demo backend exited before READY")
        self.ready_at = time.monotonic()
        return self.ready_at

    async def kill(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await self.proc.wait()
        return killed_at

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Watcher:
    """The admin Watch stream: when the view first showed each (routable, state) of the backend."""

    target: str
    events: list[tuple[float, bool, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with AdminClient(self.target) as client:
            async for event in client.watch():
                status = event.backends.get(NAME)
                if status is not None:
                    self.events.append((time.monotonic(), status.routable, str(status.state)))
                    self.changed.set()

    def first(self, after: float, *, routable: bool | None = None, state: str | None = None) -> float | None:
        for at, is_routable, is_state in self.events:
            if at >= after and (routable is None or is_routable == routable) and (state is None or is_state == state):
                return at
        return None

    async def wait(self, after: float, timeout: float = 30, **kwargs: object) -> float:
        async with asyncio.timeout(timeout):
            while (at := self.first(after, **kwargs)) is None:  # type: ignore[arg-type]
                self.changed.clear()
                await self.changed.wait()
        return at


async def envoy_switch(client: httpx2.AsyncClient, url: str, wanted: str, timeout: float = 30) -> float:
    """Poll Envoy every POLL seconds; the time the first wanted answer arrived ("503": no healthy upstream)."""
    deadline = time.monotonic() + timeout
    while True:
        sent = time.monotonic()
        try:
            response = await client.post(url, json=DISCOVER, headers=DISCOVER_HEADERS)
            got = "503" if response.status_code == 503 and response.text == NO_HEALTHY_UPSTREAM else str(response.status_code)
        except httpx2.HTTPError:
            got = "error"
        now = time.monotonic()
        if got == wanted:
            return now
        if now > deadline:
            raise TimeoutError(f"Envoy did not answer {wanted} within {timeout}s (last: {got})")
        await asyncio.sleep(max(0.0, sent + POLL - now))


async def probe_count(client: httpx2.AsyncClient, metrics_url: str) -> float:
    text = (await client.get(metrics_url)).text
    match = re.search(r'^xds_control_probe_duration_seconds_count\{backend="' + NAME + r'"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def right_after_a_probe(client: httpx2.AsyncClient, metrics_url: str, timeout: float) -> None:
    """Return as soon as the control plane has recorded one more probe of the backend."""
    before = await probe_count(client, metrics_url)
    deadline = time.monotonic() + timeout
    while await probe_count(client, metrics_url) == before:
        if time.monotonic() > deadline:
            raise TimeoutError("no probe recorded")
        await asyncio.sleep(POLL)


@dataclass
class Sample:
    total: float  # event -> Envoy switch
    verdict: float  # event -> verdict in the view (Watch stream)
    healthy: float | None = None  # restart only: event -> state healthy


def config_for(args: argparse.Namespace, port: int) -> Config:
    return stack_config(
        [{"name": NAME, "url": f"http://127.0.0.1:{port}/mcp"}],
        health={
            "interval": args.interval,
            "timeout": min(1.0, args.interval),
            "unhealthy_threshold": args.unhealthy_threshold,
            "healthy_threshold": args.healthy_threshold,
            "jitter": 0.0,
        },
        outlier_detection=NO_OUTLIER,
        circuit_breaker={"failure_threshold": 1_000_000},
    )


async def bench(args: argparse.Namespace, workdir: Path) -> tuple[list[Sample], list[Sample]]:
    port = free_port()
    config = config_for(args, port)
    backend = Backend(port)
    await backend.start()
    served = await asyncio.to_thread(start_serve, write_config(config, workdir / "xds-control.yaml"), log_level="warning")
    envoy = None
    watcher = Watcher(config.control_plane.admin)
    watch_task = asyncio.create_task(watcher.run())
    kills: list[Sample] = []
    restarts: list[Sample] = []
    try:
        envoy = await async_start_envoy(config, workdir)
        url = f"http://127.0.0.1:{config.egress.port}/backends/{NAME}/mcp"
        metrics_url = f"http://{config.control_plane.metrics}/metrics"
        async with httpx2.AsyncClient(timeout=2.0, trust_env=False) as envoy_client, httpx2.AsyncClient(timeout=2.0, trust_env=False) as cp:
            await envoy_switch(envoy_client, url, "200")
            for run in range(1, args.runs + 1):
                await right_after_a_probe(cp, metrics_url, timeout=args.interval * 3 + 5)
                killed = await backend.kill()
                switched = await envoy_switch(envoy_client, url, "503")
                verdict = await watcher.wait(killed, routable=False)
                kills.append(Sample(switched - killed, verdict - killed))

                ready = await backend.start()
                switched = await envoy_switch(envoy_client, url, "200")
                verdict = await watcher.wait(ready, routable=True)
                healthy = await watcher.wait(ready, state="healthy")
                restarts.append(Sample(switched - ready, verdict - ready, healthy - ready))
                k, r = kills[-1], restarts[-1]
                print(
                    f"run {run:2d}: kill -> 503 {k.total * 1000:7.1f} ms (verdict {k.verdict * 1000:7.1f} ms)   "
                    f"restart -> 200 {r.total * 1000:7.1f} ms (verdict {r.verdict * 1000:7.1f} ms, healthy {r.healthy * 1000:7.1f} ms)",
                    flush=True,
                )
    finally:
        watch_task.cancel()
        with contextlib.suppress(BaseException):
            await watch_task
        await backend.stop()
        if envoy is not None:
            await asyncio.to_thread(stop_proc, envoy)
        await asyncio.to_thread(stop_proc, served)
    return kills, restarts


def report(args: argparse.Namespace, kills: list[Sample], restarts: list[Sample]) -> None:
    kill_bound = args.interval * args.unhealthy_threshold
    restart_bound = args.interval * args.healthy_threshold
    print()
    print(f"{len(kills)} runs; health interval {args.interval:g} s, jitter 0, unhealthy_threshold {args.unhealthy_threshold}, "
          f"healthy_threshold {args.healthy_threshold}; Envoy polled every {POLL * 1000:g} ms")  # fmt: skip
    print(f"kill bound    = interval x unhealthy_threshold = {args.interval:g} x {args.unhealthy_threshold} = {kill_bound:.3f} s "
          "(killed right after a recorded probe: the worst phase)")  # fmt: skip
    print(f"restart bound = interval x healthy_threshold   = {args.interval:g} x {args.healthy_threshold} = {restart_bound:.3f} s "
          "(unhealthy endpoints are probed at the full interval; no fast retry after start-up; random phase)")  # fmt: skip
    print()
    header = f"{'':24s}{'median':>10s}{'p90':>10s}{'max':>10s}{'median/bound':>14s}{'p90/bound':>11s}{'median-bound':>14s}"
    print(header)

    def line(label: str, values: list[float], bound: float) -> None:
        med, p90 = statistics.median(values), pct(values, 0.9)
        print(f"{label:24s}{med:9.3f}s{p90:9.3f}s{max(values):9.3f}s{med / bound:14.3f}{p90 / bound:11.3f}{(med - bound) * 1000:+12.1f}ms")

    line("kill -> Envoy 503", [s.total for s in kills], kill_bound)
    line("kill -> verdict (view)", [s.verdict for s in kills], kill_bound)
    line("restart -> Envoy 200", [s.total for s in restarts], restart_bound)
    line("restart -> routable", [s.verdict for s in restarts], restart_bound)
    line("restart -> healthy", [s.healthy or 0.0 for s in restarts], restart_bound)
    push = [(s.total - s.verdict) * 1000 for s in kills + restarts]
    print()
    print(f"verdict -> Envoy switch (both directions, {len(push)} samples): median {statistics.median(push):.1f} ms, "
          f"p90 {pct(push, 0.9):.1f} ms, max {max(push):.1f} ms "
          "(Watch-stream receipt to the first Envoy answer that changed; includes up to one poll period)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--unhealthy-threshold", type=int, default=3)
    parser.add_argument("--healthy-threshold", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="detection-") as tmp:
        kills, restarts = asyncio.run(bench(args, Path(tmp)))
    report(args, kills, restarts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
