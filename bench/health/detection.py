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
3. 500s -> 503 and 4. fixed -> 200, both at the worst phase: the same process switches to answering HTTP 500
   (its `--fault-file`) right after a recorded good probe, then back to normal right after a recorded failed
   probe. Same bounds as 1 and 2; this is the restart's worst case, which a real restart cannot be aligned to
   (a Python process takes a variable ~0.7 s to start listening).

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

import httpx2

from tests.e2e.support import (
    DISCOVER,
    DISCOVER_HEADERS,
    NO_HEALTHY_UPSTREAM,
    NO_OUTLIER,
    start_serve,
    stop_proc,
    write_config,
)
from tests.support.procs import unwind_on_sigterm
from tests.support.stack import async_start_envoy, stack_config
from tests.support.waiting import free_port
from xds_control.admin.client import AdminClient
from xds_control.config import Config

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
    fault_file: Path
    proc: asyncio.subprocess.Process | None = None
    ready_at: float = 0.0

    def fault(self, mode: str) -> float:
        """Switch the running backend's fault mode (re-read on every request); the time it took effect."""
        tmp = self.fault_file.with_suffix(".tmp")
        tmp.write_text(mode)
        tmp.replace(self.fault_file)
        return time.monotonic()

    async def start(self) -> float:
        root = Path(__file__).resolve().parents[2]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "examples.backends.demo_server", "--name", NAME, "--port", str(self.port),
            "--fault-file", str(self.fault_file),
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
    """Poll Envoy every POLL seconds; the time the first wanted answer arrived ("unrouted": Envoy's own 503
    "no healthy upstream", not the 503 it answers while it still tries the dead endpoint)."""
    deadline = time.monotonic() + timeout
    while True:
        sent = time.monotonic()
        try:
            response = await client.post(url, json=DISCOVER, headers=DISCOVER_HEADERS)
            got = (
                "unrouted"
                if response.status_code == 503 and response.text == NO_HEALTHY_UPSTREAM
                else str(response.status_code)
            )
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
    match = re.search(
        r'^xds_control_probe_duration_seconds_count\{backend="' + NAME + r'"\} (\S+)$', text, re.MULTILINE
    )
    return float(match.group(1)) if match else 0.0


async def right_after_a_probe(client: httpx2.AsyncClient, metrics_url: str, timeout: float) -> None:
    """Return as soon as the control plane has recorded one more probe of the backend."""
    before = await probe_count(client, metrics_url)
    deadline = time.monotonic() + timeout
    while await probe_count(client, metrics_url) == before:
        if time.monotonic() > deadline:
            raise TimeoutError("no probe recorded")
        await asyncio.sleep(POLL)


async def failed_probes(client: httpx2.AsyncClient, metrics_url: str) -> float:
    text = (await client.get(metrics_url)).text
    return sum(
        float(v)
        for v in re.findall(
            r'^xds_control_probe_failures_total\{backend="' + NAME + r'",[^}]*\} (\S+)$', text, re.MULTILINE
        )
    )


async def right_after_a_failed_probe(client: httpx2.AsyncClient, metrics_url: str, timeout: float) -> None:
    before = await failed_probes(client, metrics_url)
    deadline = time.monotonic() + timeout
    while await failed_probes(client, metrics_url) == before:
        if time.monotonic() > deadline:
            raise TimeoutError("no failed probe recorded")
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


@dataclass
class Samples:
    kill: list[Sample] = field(default_factory=list)
    restart: list[Sample] = field(default_factory=list)
    fault: list[Sample] = field(default_factory=list)
    fixed: list[Sample] = field(default_factory=list)


async def bench(args: argparse.Namespace, workdir: Path) -> Samples:
    port = free_port()
    config = config_for(args, port)
    backend = Backend(port, workdir / "fault")
    backend.fault("none")
    await backend.start()
    served = await asyncio.to_thread(
        start_serve, write_config(config, workdir / "xds-control.yaml"), log_level="warning"
    )
    envoy = None
    watcher = Watcher(config.control_plane.admin)
    watch_task = asyncio.create_task(watcher.run())
    samples = Samples()
    try:
        envoy = await async_start_envoy(config, workdir)
        url = f"http://127.0.0.1:{config.egress.port}/backends/{NAME}/mcp"
        metrics_url = f"http://{config.control_plane.metrics}/metrics"
        async with (
            httpx2.AsyncClient(timeout=2.0, trust_env=False) as envoy_client,
            httpx2.AsyncClient(timeout=2.0, trust_env=False) as cp,
        ):
            await envoy_switch(envoy_client, url, "200")
            slack = args.interval * (args.unhealthy_threshold + 2) + 5
            for run in range(1, args.runs + 1):
                await right_after_a_probe(cp, metrics_url, timeout=slack)
                killed = await backend.kill()
                switched = await envoy_switch(envoy_client, url, "unrouted")
                verdict = await watcher.wait(killed, routable=False)
                samples.kill.append(Sample(switched - killed, verdict - killed))

                ready = await backend.start()
                switched = await envoy_switch(envoy_client, url, "200")
                verdict = await watcher.wait(ready, routable=True)
                healthy = await watcher.wait(ready, state="healthy")
                samples.restart.append(Sample(switched - ready, verdict - ready, healthy - ready))

                await right_after_a_probe(cp, metrics_url, timeout=slack)
                broken = backend.fault("http500")
                switched = await envoy_switch(envoy_client, url, "unrouted")
                verdict = await watcher.wait(broken, routable=False)
                samples.fault.append(Sample(switched - broken, verdict - broken))

                await right_after_a_failed_probe(cp, metrics_url, timeout=slack)
                fixed = backend.fault("none")
                switched = await envoy_switch(envoy_client, url, "200")
                verdict = await watcher.wait(fixed, routable=True)
                healthy = await watcher.wait(fixed, state="healthy")
                samples.fixed.append(Sample(switched - fixed, verdict - fixed, healthy - fixed))
                print(
                    f"run {run:2d}: kill -> 503 {samples.kill[-1].total * 1000:6.0f} ms   restart -> 200 {samples.restart[-1].total * 1000:6.0f} ms"
                    f"   500s -> 503 {samples.fault[-1].total * 1000:6.0f} ms   fixed -> 200 {samples.fixed[-1].total * 1000:6.0f} ms",
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
    return samples


def report(args: argparse.Namespace, samples: Samples) -> None:
    kill_bound = args.interval * args.unhealthy_threshold
    restart_bound = args.interval * args.healthy_threshold
    print()
    print(f"{len(samples.kill)} runs; health interval {args.interval:g} s, jitter 0, unhealthy_threshold {args.unhealthy_threshold}, "
          f"healthy_threshold {args.healthy_threshold}; Envoy polled every {POLL * 1000:g} ms")  # fmt: skip
    print(f"down bound = interval x unhealthy_threshold = {args.interval:g} x {args.unhealthy_threshold} = {kill_bound:.3f} s: "
          "the next probe is due one interval after the last good one and the verdict comes with failure "
          f"number {args.unhealthy_threshold} (a refused connection or a 500 fails at once)")  # fmt: skip
    print(f"up bound   = interval x healthy_threshold   = {args.interval:g} x {args.healthy_threshold} = {restart_bound:.3f} s: "
          "an unhealthy endpoint is probed at the full interval (the fast 1 s, 2 s, ... retries are for endpoints "
          "still unknown after start-up); the first good probe makes it routable (healthy, or degraded while "
          "recovering), healthy_threshold good probes make it healthy")  # fmt: skip
    print()
    print(f"{'':40s}{'median':>9s}{'p90':>9s}{'max':>9s}{'median/bound':>14s}{'p90/bound':>11s}{'median-bound':>14s}")

    def line(label: str, values: list[float], bound: float) -> None:
        med, p90 = statistics.median(values), pct(values, 0.9)
        print(
            f"{label:40s}{med:8.3f}s{p90:8.3f}s{max(values):8.3f}s{med / bound:14.3f}{p90 / bound:11.3f}{(med - bound) * 1000:+12.1f}ms"
        )

    line("kill, worst phase -> Envoy 503", [s.total for s in samples.kill], kill_bound)
    line("  ... -> verdict in the view", [s.verdict for s in samples.kill], kill_bound)
    line("500s, worst phase -> Envoy 503", [s.total for s in samples.fault], kill_bound)
    line("fixed, worst phase -> Envoy 200", [s.total for s in samples.fixed], restart_bound)
    line("  ... -> healthy in the view", [s.healthy or 0.0 for s in samples.fixed], restart_bound)
    line("restart (READY), random phase -> 200", [s.total for s in samples.restart], restart_bound)
    line("  ... -> healthy in the view", [s.healthy or 0.0 for s in samples.restart], restart_bound)
    every = samples.kill + samples.restart + samples.fault + samples.fixed
    push = [(s.total - s.verdict) * 1000 for s in every]
    print()
    print(f"verdict -> Envoy switch ({len(push)} samples, both directions): median {statistics.median(push):.1f} ms, "
          f"p90 {pct(push, 0.9):.1f} ms, max {max(push):.1f} ms (Watch-stream receipt to the first Envoy answer "
          f"that changed, so it includes up to one {POLL * 1000:g} ms poll period)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--unhealthy-threshold", type=int, default=3)
    parser.add_argument("--healthy-threshold", type=int, default=1)
    args = parser.parse_args()
    unwind_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="detection-") as tmp:
        samples = asyncio.run(bench(args, Path(tmp)))
    report(args, samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
