"""Waiting on conditions with deadlines: the only way tests synchronise (no sleeps)."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_LOW = 20000
_EPHEMERAL_LOW = _ephemeral_low()


def _worker_slice() -> range:
    """This test process's own share of the ports below the ephemeral range: pytest-xdist workers pick
    independently, so two of them drawing from one pool can hand out the same port (seen as EADDRINUSE)."""
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (_EPHEMERAL_LOW - _LOW) // count
    return range(_LOW + index * width, _LOW + (index + 1) * width)


def _in_turn(ports: range) -> Iterator[int]:
    """The ports in turn from a random start, so a port comes round again only after the whole slice
    (thousands of ports): a port handed out but not yet bound is never handed out twice."""
    at = random.randrange(len(ports))
    while True:
        yield ports[at]
        at = (at + 1) % len(ports)


def _turns_for(ports: range) -> Iterator[int] | None:
    """Ports in turn from this slice; None for an unusual port range (a thin slice): the kernel chooses."""
    return _in_turn(ports) if len(ports) > 1000 else None


_turns = _turns_for(_worker_slice())


def _bindable(host: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        return None
    return sock


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports nobody listens on right now, below the kernel's ephemeral range: a port handed
    out by binding port 0 is an ephemeral one, which any outgoing connection (a probe, Envoy, another test
    worker) may take as its source port before the test's server binds it; seen as EADDRINUSE flakes."""
    socks: list[socket.socket] = []
    try:
        for _ in range(100 * count):
            if len(socks) == count:
                break
            sock = _bindable(host, next(_turns) if _turns is not None else 0)
            if sock is not None:
                socks.append(sock)
        if len(socks) < count:
            raise RuntimeError(f"found only {len(socks)} of {count} free ports")
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive ports nobody listens on right now (aggregator replicas: port + i),
    from this test process's own slice (see `free_ports`)."""
    ports = _worker_slice()
    for _ in range(200):
        base = random.randrange(ports.start, ports.stop - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = _bindable(host, port)
                if sock is None:
                    break
                socks.append(sock)
            if len(socks) == count:
                return base
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"found no run of {count} free ports")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (see `free_ports`)."""
    return free_ports(1, host)[0]


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        time.sleep(interval)


async def async_wait_until(
    condition: Callable[[], Awaitable[T] | T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Async `wait_until`: `condition` may be sync or async."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
                value = await value  # type: ignore[misc]
            if value:
                return value  # type: ignore[return-value]
        except Exception as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
            )
        await asyncio.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0
