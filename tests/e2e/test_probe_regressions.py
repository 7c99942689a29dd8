"""Regressions found by the end-to-end benchmarks (bench/health/), pinned against real sockets.

(They belong with tests/health; kept here while the health tests are owned elsewhere.)
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from tests.support.waiting import free_ports
from xds_control.config import parse_config
from xds_control.health.probe import EndpointProber

pytestmark = pytest.mark.integration


async def test_probing_dead_backends_does_not_load_the_ca_bundle_per_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prober drops its HTTP client after every connection failure (no stale keep-alive); the new client
    reuses the one TLS context, so probing a dead backend never loads the CA bundle again."""
    loads: list[Any] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    config = parse_config(
        {
            "backends": [
                {"name": f"dead{i}", "url": f"http://127.0.0.1:{port}/mcp"} for i, port in enumerate(free_ports(3))
            ]
        }
    )
    probers = [EndpointProber(b, b.endpoint_urls[0], config.health) for b in config.backends]
    try:
        for _ in range(3):
            for prober in probers:
                result = await prober.probe()
                assert (result.ok, result.category) == (False, "connection_refused")
    finally:
        for prober in probers:
            await prober.aclose()
    assert len(loads) <= 1, f"the CA bundle was loaded {len(loads)} times for 9 probes of dead backends"
