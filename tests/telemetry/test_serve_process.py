"""`xds-control serve` as a real process, for its telemetry: with `--log-format json` every stderr line
is one JSON object and each backend transition, each config reload is exactly one line with its
structured fields; with `telemetry.otlp_endpoint` set its spans reach an OTLP/HTTP receiver."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import ROOT, Proc, demo_backend
from tests.support.waiting import free_ports, wait_until
from tests.telemetry.test_tracing import Collector

pytestmark = pytest.mark.integration


def write(path: Path, text: str) -> None:
    """Replace the file the way editors and config maps do (write a temp file, rename over)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Serve:
    """`xds-control serve` with stdout and stderr kept apart (stderr is where the log lines go)."""

    def __init__(self, config: Path, tmp: Path, *args: str) -> None:
        self.out, self.err = tmp / "stdout", tmp / "stderr"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "xds_control.cli", "serve", "-c", str(config), *args],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True,
            )  # fmt: skip

    def lines(self) -> list[str]:
        return self.err.read_text().splitlines()

    def entries(self) -> list[dict[str, Any]]:
        """Every complete stderr line, parsed (a line that is not JSON fails the test here)."""
        text = self.err.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines()]

    def wait_for(self, what: str, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.entries() if all(e.get(k) == v for k, v in fields.items())), None)

        return wait_until(found, timeout=20, what=f"{what} in the log: {fields}")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout=10)


@pytest.fixture
def ports() -> list[int]:
    return free_ports(4)


@pytest.fixture
def backend(ports: list[int]) -> Iterator[list[Proc]]:
    procs = [demo_backend("weather", ports[3])]
    yield procs  # a test may replace the process; every one is stopped
    for proc in procs:
        proc.stop()


def config_text(ports: list[int], interval: str, **sections: Any) -> str:
    return yaml.safe_dump(
        {
            "control_plane": {
                "xds": f"127.0.0.1:{ports[0]}",
                "admin": f"127.0.0.1:{ports[1]}",
                "metrics": f"127.0.0.1:{ports[2]}",
            },
            "health": {"interval": interval, "unhealthy_threshold": 1, "healthy_threshold": 1},
            "circuit_breaker": {"failure_threshold": 1000},  # this test is about health transitions, not the breaker
            "backends": [{"name": "weather", "url": f"http://127.0.0.1:{ports[3]}/mcp"}],
            **sections,
        }
    )


def test_serve_logs_one_json_line_per_transition_and_per_reload(
    tmp_path: Path, ports: list[int], backend: list[Proc]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text(ports, "200ms"))
    serve = Serve(config, tmp_path, "--log-format", "json", "--log-level", "info")
    try:
        wait_until(lambda: "READY" in serve.out.read_text(), timeout=20, what="READY on stdout")
        serve.wait_for("weather healthy", event="backend_transition", backend="weather", to="healthy")

        backend[0].kill()
        down = serve.wait_for("weather unhealthy", event="backend_transition", backend="weather", to="unhealthy")
        backend.append(demo_backend("weather", ports[3]))  # the same port: it comes back
        serve.wait_for(
            "weather recovered", event="backend_transition", backend="weather", **{"from": "unhealthy", "to": "healthy"}
        )

        write(config, config_text(ports, "300ms"))
        applied = serve.wait_for("an applied reload", event="config_reload", result="applied")
        write(config, config_text(ports, "300ms").replace("300ms", "soon"))
        rejected = serve.wait_for("a rejected reload", event="config_reload", result="rejected")
        assert serve.stop() == 0
    finally:
        serve.stop()

    lines = serve.lines()
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"stderr line {number} is not JSON: {line!r}")
        assert {"ts", "level", "logger", "msg"} <= entry.keys(), line
    entries = [json.loads(line) for line in lines]

    transitions = [(e["from"], e["to"]) for e in entries if e.get("event") == "backend_transition"]
    assert transitions == [("unknown", "healthy"), ("healthy", "unhealthy"), ("unhealthy", "healthy")], (
        "one line per transition, none twice"
    )
    assert down["reason"] in ("connection_refused", "connection_reset")  # (reset: killed mid-probe)
    assert down["level"] == "warning" and down["logger"] == "xds_control.health"
    for entry in entries:
        if entry.get("event") == "backend_transition":
            assert {"backend", "from", "to", "reason"} <= entry.keys()

    reloads = [e for e in entries if e.get("event") == "config_reload"]
    assert [(e["source"], e["result"]) for e in reloads] == [("file", "applied"), ("file", "rejected")], (
        "one line per reload"
    )
    assert applied["path"] == str(config) and applied["backends"] == 1 and applied["level"] == "info"
    assert rejected["fields"] == "health.interval" and rejected["level"] == "error"
    assert not [e for e in entries if e.get("event") == "nack"]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def test_serve_exports_its_probe_spans_over_otlp_http(
    tmp_path: Path, ports: list[int], backend: list[Proc], collector: Collector
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    config = tmp_path / "config.yaml"
    config.write_text(config_text(ports, "200ms", telemetry={"otlp_endpoint": f"http://127.0.0.1:{collector.port}"}))
    serve = Serve(config, tmp_path, "--log-format", "json")
    try:
        serve.wait_for("weather healthy", event="backend_transition", backend="weather", to="healthy")
        assert serve.stop() == 0  # shutting down flushes the batch of spans not yet sent
    finally:
        serve.stop()
    wait_until(lambda: collector.requests, timeout=10, what="an OTLP export request")
    spans = []
    for path, content_type, body in list(collector.requests):
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
            service = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}["service.name"]
            assert service == "xds-control-control-plane"
            spans += [span for scope in resource_spans.scope_spans for span in scope.spans]
    probes = [s for s in spans if s.name == "xds_control.health.probe"]
    assert probes, [s.name for s in spans]
    attributes = {kv.key: kv.value for kv in probes[0].attributes}
    assert attributes["backend"].string_value == "weather" and attributes["outcome"].string_value == "ok"
    assert attributes["endpoint"].string_value == f"http://127.0.0.1:{ports[3]}/mcp"
