"""What incoming authentication and authorization cost on a `tools/call`: the same stack with and without `auth`.

Real processes, two stacks side by side (each: `xds-control serve`, Envoy, `xds-control aggregator`), one
lightweight MCP backend (bench/health/mcp_stub.py: an echo tool) behind both. The authenticated stack has an
issuer (a JWKS file, ES256), `authorization` rules (the principal's group grants `alpha_*`; other rules that
do not match are evaluated too) and, with `--rate-limit`, a per-principal limit far above the load. Every call
is a 2026-07-28 `tools/call` on Envoy's `/mcp`; the authenticated one carries `Authorization: Bearer <JWT>`.
Each gateway process writes its output (the authenticated aggregator's audit line per call included) to a file
in its stack's directory, as a log collector would take it: this process, which makes the load, reads none of it.

1. Added latency: one call at a time, `--blocks` blocks of `--calls` calls, alternating open and
   authenticated stacks block by block (a loaded machine slows both alike); the medians and their difference.
   Target: authentication + authorization add < 0.3 ms at the median.
2. Throughput: `--concurrency` workers for `--seconds` on each stack (after a warm-up), `--pairs` times open and
   authenticated back to back (the order alternating), calls/s and the median of the pairs' ratios. Target: the
   authenticated gateway >= 90 % of the open one.
3. Throughput side by side: half the workers on each stack at once, `--side-by-side` windows of `--seconds`;
   calls/s of each, the median of the windows' ratios and each stack's CPU per call. Both stacks share the
   machine's two cores and whatever else slows it at that moment, so the ratio is the cost ratio without the
   drift between windows that spreads the pairs of 2. `--both-open` makes the second stack open too: the
   ratio the method reads when nothing differs.

Run: .venv/bin/python bench/auth.py [--calls 200] [--blocks 10] [--concurrency 16] [--seconds 5] [--pairs 10]
     [--side-by-side 5] [--rate-limit] [--both-open]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.load import BASE_HEADERS, META, CallLoad
from tests.support.procs import cpu_seconds, unwind_on_sigterm
from tests.support.stack import FullStack, stack_config
from xds_control.auth import devtoken
from xds_control.http11 import HttpClient

HERE = Path(__file__).resolve().parent
MODERN = "2026-07-28"
RULES = [
    {"name": f"team-{i}", "match": {"claim": "groups", "any_of": [f"team-{i}"]}, "tools": [f"team{i}_*"]}
    for i in range(20)
] + [{"name": "bench", "match": {"claim": "groups", "any_of": ["bench"]}, "tools": ["alpha_*"], "resources": ["*"]}]


async def one_call(http: HttpClient, url: str, headers: dict[str, str], n: int) -> float:
    body = {"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "alpha_echo", "arguments": {"text": f"t{n}"}, "_meta": META}}  # fmt: skip
    started = time.perf_counter()
    async with http.stream("POST", url, headers=headers, content=json.dumps(body).encode()) as answer:
        data = b"".join([chunk async for chunk in answer.aiter_bytes()])
    elapsed = time.perf_counter() - started
    if answer.status_code != 200 or f'"t{n}"'.encode() not in data:
        raise RuntimeError(f"call failed: HTTP {answer.status_code} {data[:120]!r}")
    return elapsed


async def until_ready(http: HttpClient, url: str, headers: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        try:
            await one_call(http, url, headers, n)
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} never answered a call: {exc}") from None
            await asyncio.sleep(0.2)  # polling a condition with a deadline


def _extra(headers: dict[str, dict[str, str]], name: str) -> dict[str, str] | None:
    """What a `CallLoad` on stack `name` sends besides the protocol's headers."""
    return {"authorization": headers[name]["authorization"]} if "authorization" in headers[name] else None


async def side_by_side(
    args: argparse.Namespace, stacks: list[FullStack], urls: dict[str, str], headers: dict[str, dict[str, str]]
) -> None:
    """Measurement 3 of the module docstring."""
    workers = max(1, args.concurrency // 2)
    loads = {
        name: CallLoad(urls[name], "alpha_echo", modern=workers, legacy=0, headers=_extra(headers, name))
        for name in ("open", "auth")
    }
    pids = {
        (name, k): p.popen.pid
        for name, stack in zip(("open", "auth"), stacks, strict=True)
        for k, p in stack.procs.items()
    }
    ratios: list[float] = []
    cpus: list[dict[tuple[str, str], float]] = []
    for load in loads.values():
        await load.start()
    try:
        await asyncio.sleep(args.warmup)  # a sampler's warm-up, not a synchronisation
        for _ in range(args.side_by_side):
            cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
            ok0, t0 = {n: load.stats.ok for n, load in loads.items()}, time.monotonic()
            await asyncio.sleep(args.seconds)  # the measuring window
            elapsed = time.monotonic() - t0
            done = {n: load.stats.ok - ok0[n] for n, load in loads.items()}
            cpus.append({k: (cpu_seconds(pid) - cpu0[k]) * 1000 / max(done[k[0]], 1) for k, pid in pids.items()})
            ratios.append(done["auth"] / max(done["open"], 1))
            print(
                f"side by side, {workers} workers each: open {done['open'] / elapsed:.0f} calls/s, "
                f"auth {done['auth'] / elapsed:.0f} calls/s ({ratios[-1] * 100:.0f} %)",
                flush=True,
            )
    finally:
        for load in loads.values():
            await load.stop()
    failed = sum(load.stats.failed for load in loads.values())
    print("side by side, CPU per call, median of the windows (ms; each stack's own processes):")
    total = {}
    for name in ("open", "auth"):
        per = {k: statistics.median(c[(name, k)] for c in cpus) for k in stacks[0].procs}
        total[name] = sum(per.values())
        print(f"  {name:4}: " + ", ".join(f"{k} {v:.3f}" for k, v in per.items()) + f"; all {total[name]:.3f}")
    print(
        f"side by side, authenticated / open calls/s: median {statistics.median(ratios) * 100:.0f} % of "
        f"{len(ratios)} windows ({', '.join(f'{r * 100:.0f}' for r in ratios)}; target >= 90 %); stacks' CPU per "
        f"call open / auth {total['open'] / total['auth'] * 100:.0f} %; failed {failed}; load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--pairs", type=int, default=10, help="throughput windows: open and auth back to back")
    parser.add_argument("--side-by-side", type=int, default=5, help="windows with both stacks loaded at once")
    parser.add_argument("--rate-limit", action="store_true", help="also a per-principal rate limit (never reached)")
    parser.add_argument("--both-open", action="store_true", help="a control run: the second stack is open too")
    args = parser.parse_args()
    unwind_on_sigterm()

    stub = subprocess.Popen(
        [sys.executable, str(HERE / "health" / "mcp_stub.py"), "--count", "1"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    stacks: list[FullStack] = []
    try:
        assert stub.stdout is not None
        port = int(stub.stdout.readline().split()[1])
        backends = [{"name": "alpha", "url": f"http://127.0.0.1:{port}/mcp"}]
        with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
            key = devtoken.new_key("ES256")
            (Path(tmp) / "jwks.json").write_text(devtoken.jwks(key))
            sections: dict[str, Any] = {
                "auth": {"issuers": [{"issuer": devtoken.DEV_ISSUER, "jwks_file": str(Path(tmp) / "jwks.json")}]},
                "authorization": {"rules": RULES},
            }
            if args.rate_limit:
                sections["rate_limit"] = {"requests_per_second": 1_000_000, "burst": 1_000_000}
            for name in ("open", "auth"):  # one after the other: free ports are picked when a config is made
                authenticated = name == "auth" and not args.both_open
                config = stack_config(backends, health={"interval": "2s"}, **(sections if authenticated else {}))
                stack = FullStack(config, Path(tmp) / name, logs_to_files=True)  # nobody here reads an audit line
                stacks.append(stack)
                await stack.start()
            token = key.sign(devtoken.claims(sub="bench", audience=stacks[1].config.auth_resource(), groups=["bench"],
                                             lifetime=3600))  # fmt: skip
            urls = {"open": stacks[0].mcp_url, "auth": stacks[1].mcp_url}
            headers = {"open": {**BASE_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": "tools/call",
                                "mcp-name": "alpha_echo"}}  # fmt: skip
            headers["auth"] = {**headers["open"], "authorization": f"Bearer {token}"}
            if args.both_open:
                headers["auth"] = headers["open"]
            clients = {name: HttpClient(None, max_idle=4) for name in urls}  # an HttpClient talks to one server
            for name in urls:
                await until_ready(clients[name], urls[name], headers[name])
            lat: dict[str, list[float]] = {"open": [], "auth": []}
            n = 0
            for block in range(args.blocks):
                order = ("open", "auth") if block % 2 == 0 else ("auth", "open")
                for name in order:
                    for _ in range(args.calls):
                        n += 1
                        lat[name].append(await one_call(clients[name], urls[name], headers[name], n))
            med = {k: statistics.median(v) * 1000 for k, v in lat.items()}
            p90 = {k: statistics.quantiles(v, n=10)[-1] * 1000 for k, v in lat.items()}
            print(
                f"latency, one call at a time ({args.blocks} blocks x {args.calls} calls each, interleaved):",
                flush=True,
            )
            for name in ("open", "auth"):
                print(f"  {name:4}: median {med[name]:.3f} ms, p90 {p90[name]:.3f} ms")
            print(
                f"added median latency (auth - open): {med['auth'] - med['open']:+.3f} ms (target < 0.3 ms)", flush=True
            )

            ratios: list[float] = []
            cpus: dict[str, list[dict[str, float]]] = {"open": [], "auth": []}
            for pair in range(args.pairs):  # open and auth back to back, the order alternating: drift hits both
                rates: dict[str, float] = {}
                for name in ("open", "auth") if pair % 2 == 0 else ("auth", "open"):
                    extra = _extra(headers, name)
                    load = CallLoad(urls[name], "alpha_echo", modern=args.concurrency, legacy=0, headers=extra)
                    await load.start()
                    await asyncio.sleep(args.warmup)  # a sampler's warm-up, not a synchronisation
                    stack = stacks[0 if name == "open" else 1]
                    pids = {k: p.popen.pid for k, p in stack.procs.items()} | {"stub": stub.pid, "client": os.getpid()}
                    cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
                    ok0, failed0, t0 = load.stats.ok, load.stats.failed, time.monotonic()
                    await asyncio.sleep(args.seconds)  # the measuring window
                    done = load.stats.ok - ok0
                    rates[name] = done / (time.monotonic() - t0)
                    cpu = {k: (cpu_seconds(pid) - cpu0[k]) * 1000 / max(done, 1) for k, pid in pids.items()}
                    cpus[name].append(cpu)
                    failed = load.stats.failed - failed0
                    await load.stop()
                    print(
                        f"throughput {name:4} concurrency={args.concurrency}: {rates[name]:.0f} calls/s, failed {failed}",
                        flush=True,
                    )
                ratios.append(rates["auth"] / rates["open"])
            print("CPU per call, median of the windows (ms; every process of the stack, the stub and this client):")
            total = {}
            for name in ("open", "auth"):
                per = {k: statistics.median(c[k] for c in cpus[name]) for k in cpus[name][0]}
                total[name] = sum(per.values())
                print(f"  {name:4}: " + ", ".join(f"{k} {v:.3f}" for k, v in per.items()) + f"; all {total[name]:.3f}")
            print(
                f"  the machine's CPU per call, open / auth: {total['open'] / total['auth'] * 100:.0f} % "
                "(the calls/s ratio a CPU-bound machine allows)"
            )
            print(
                f"authenticated / open calls/s: median {statistics.median(ratios) * 100:.0f} % of {len(ratios)} back-to-back "
                f"pairs ({', '.join(f'{r * 100:.0f}' for r in ratios)}; target >= 90 %); machine: {os.cpu_count()} cores, "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            if args.side_by_side:
                await side_by_side(args, stacks, urls, headers)
    finally:
        for stack in stacks:
            stack.stop()
        stub.terminate()
        stub.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
