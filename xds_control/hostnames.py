"""Backend endpoints named by host name: resolved to the IP address EDS needs, and re-resolved every probe round.

EDS carries addresses, not names, so the control plane resolves each endpoint URL's host and keeps the
address in the view (`EndpointStatus.address`; a change is a view change and reaches Envoy as EDS). A name
behind a Kubernetes Service or a Docker service can move to another address at any time (a Service deleted
and created again, a container re-created), so the names are looked up again every `health.interval`, at
most every `MAX_INTERVAL` and at least every `MIN_INTERVAL`.

Invariants (`pick_address`, pure): an endpoint keeps its address while the name still resolves to it (a name
with several addresses, in an order that changes per lookup, never flips Envoy's host between them); a
lookup that fails or answers nothing keeps the last known address (the prober reports the DNS failure); a
name that no longer resolves to the known address moves to the first address of the new answer.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from xds_control.config import Config
from xds_control.view import BackendStatus, ViewStore

log = logging.getLogger(__name__)

MIN_INTERVAL = 1.0
MAX_INTERVAL = 30.0

# host, port -> the addresses the name resolves to, in the resolver's order (OSError when it cannot)
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]


def pick_address(current: str | None, resolved: Sequence[str]) -> str | None:
    """The address an endpoint goes on with, given the one it has and a fresh lookup's answer."""
    if not resolved:
        return current
    if current is not None and current in resolved:
        return current
    return resolved[0]


def needs_lookup(host: str) -> bool:
    """True for a host name; False for an IP literal and for `localhost` (EDS maps it to 127.0.0.1)."""
    if host == "localhost":
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def lookup_interval(config: Config) -> float:
    """Seconds between two lookups of every name: one probe round, within [MIN_INTERVAL, MAX_INTERVAL]."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, float(config.health.interval)))


async def system_resolve(host: str, port: int) -> list[str]:
    """The system resolver (getaddrinfo: /etc/hosts, then DNS), distinct addresses in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_once(store: ViewStore, resolve: Resolve = system_resolve) -> None:
    """Look up every host-named endpoint of the current config once and put the picked address in the view."""
    for backend in store.current.config.backends:
        for url in backend.endpoint_urls:
            if not needs_lookup(url.host):
                continue
            try:
                resolved = await resolve(url.host, url.port)
            except OSError:
                resolved = []
            status = store.current.backends.get(backend.name)
            current = next((e.address for e in status.endpoints if e.url == url.url), None) if status else None
            address = pick_address(current, resolved)
            if address is not None and address != current:
                if current is not None:
                    log.info(
                        "backend endpoint moved to another address",
                        extra={"backend": backend.name, "from": current, "to": address},
                    )
                store.update_backend(backend.name, functools.partial(_with_address, url=url.url, address=address))


async def follow_hostnames(store: ViewStore, resolve: Resolve = system_resolve) -> None:
    """Resolve every host-named endpoint now and again every probe round, until cancelled."""
    while True:
        await resolve_once(store, resolve)
        await asyncio.sleep(lookup_interval(store.current.config))


def _with_address(status: BackendStatus, *, url: str, address: str) -> BackendStatus:
    """`status` with the endpoint `url` resolved to `address`."""
    return replace(
        status, endpoints=tuple(replace(e, address=address) if e.url == url else e for e in status.endpoints)
    )
