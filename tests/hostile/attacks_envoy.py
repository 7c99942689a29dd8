"""Attacks on Envoy's public listener."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.hostile.support import Finding, HostileStack, Scale, StackSpec, attack

HEADER = b"POST /mcp HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 4000


async def _slow_client(port: int, interval: float, stop: asyncio.Event) -> tuple[float | None, bool]:
    """Send a request's headers a byte at a time, never finishing them. (seconds until Envoy closed the
    connection or None if it never did, whether it was accepted at all)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None, False
    started = time.monotonic()
    closed_at: float | None = None
    try:
        for byte in HEADER:
            if stop.is_set():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(reader.read(4096), interval)
                if data == b"" or data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.1 4"):
                    closed_at = time.monotonic() - started
                    break
    except (ConnectionError, OSError):
        closed_at = time.monotonic() - started
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return closed_at, True


@attack(
    "envoy-slowloris",
    surface="Envoy listener: connections sending a request's headers one byte at a time",
    stack=StackSpec(aggregator=True, config={"listener": {"request_headers_timeout": "2s"}}),
)
async def slowloris(stack: HostileStack, scale: Scale) -> Finding:
    connections = scale.pick(300, 2000)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_slow_client(stack.cfg.listener.port, 0.5, stop)) for _ in range(connections)]
    try:
        done, _pending = await asyncio.wait(tasks, timeout=30)  # 2 s header timeout: all cut off long before
    finally:
        stop.set()
    results = [t.result() for t in done]
    await asyncio.gather(*tasks, return_exceptions=True)
    accepted = [r for r in results if r[1]]
    cut = [r[0] for r in accepted if r[0] is not None]
    return Finding(
        f"{len(cut)} of {connections} slow connections closed by Envoy (request_headers_timeout 2s)",
        {
            "connections": connections,
            "accepted": len(accepted),
            "cut_off": len(cut),
            "slowest_cut_s": round(max(cut, default=0.0), 2),
            "unfinished": connections - len(done),
        },
    )
