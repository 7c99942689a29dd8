"""The Prometheus endpoint: real sockets on free ports."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from tests.support.waiting import port_open
from xds_control.telemetry.metrics_server import start_metrics_server


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("xds_control_test_events", "Events seen by the test.", ["kind"], registry=registry).labels(
        kind="probe"
    ).inc(3)
    return registry


def test_serves_the_registry_on_metrics(registry):
    with start_metrics_server("127.0.0.1", 0, registry) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        status, content_type, body = get(server.url)
    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'xds_control_test_events_total{kind="probe"} 3.0' in body


def test_healthz_answers_ok_and_other_paths_404(registry):
    with start_metrics_server("127.0.0.1", 0, registry) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert get(f"{base}/healthz")[::2] == (200, "ok\n")
        assert get(f"{base}/favicon.ico")[0] == 404
        assert get(f"{base}/")[0] == 404


def test_stop_closes_the_port_and_is_idempotent(registry):
    server = start_metrics_server("127.0.0.1", 0, registry)
    assert port_open(server.port)
    server.stop()
    assert not port_open(server.port)
    server.stop()


def test_a_port_in_use_fails_at_start():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        with pytest.raises(OSError):
            start_metrics_server("127.0.0.1", squatter.getsockname()[1])


def test_serves_on_ipv6_loopback(registry):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with start_metrics_server("::1", 0, registry) as server:
        assert server.url == f"http://[::1]:{server.port}/metrics"
        assert get(server.url)[0] == 200


def test_the_default_registry_includes_process_metrics():
    with start_metrics_server("127.0.0.1", 0) as server:
        status, _, body = get(server.url)
    assert status == 200 and "python_info" in body
