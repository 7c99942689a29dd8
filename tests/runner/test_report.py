"""The reporter of `xds-control up`: which one is chosen, change lines from the view, child output in JSON mode."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace

import pytest

from xds_control.runner.report import LiveReporter, PlainReporter, child_line, make_reporter, status_message
from xds_control.telemetry.logs import setup_logging
from xds_control.view import BackendState, BackendStatus, BreakerState, Catalog, EndpointStatus

WEATHER = BackendStatus(
    name="weather",
    state=BackendState.HEALTHY,
    last_probe_ms=3.0,
    catalog=Catalog.build(tools=[{"name": "a"}, {"name": "b"}]),
    endpoints=(EndpointStatus("http://127.0.0.1:9001/mcp", BackendState.HEALTHY),),
)


def test_quiet_or_no_terminal_means_plain_lines_and_a_terminal_means_the_live_table() -> None:
    assert isinstance(make_reporter(True, interactive=True), PlainReporter)
    assert not isinstance(make_reporter(True, interactive=True), LiveReporter)
    assert not isinstance(make_reporter(False, interactive=False), LiveReporter)
    assert isinstance(make_reporter(False, interactive=True), LiveReporter)


def test_json_logs_mean_plain_lines_even_on_a_terminal() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("json", "info")
        assert not isinstance(make_reporter(False, interactive=True), LiveReporter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_plain_mode_logs_one_structured_line_per_backend_change(caplog: pytest.LogCaptureFixture) -> None:
    reporter = PlainReporter(out=io.StringIO(), err=io.StringIO())
    down = replace(WEATHER, state=BackendState.UNHEALTHY, breaker=BreakerState.OPEN, last_error="timeout")
    with caplog.at_level(logging.INFO, logger="xds_control.runner"):
        reporter.backends(1, {"weather": WEATHER})
        reporter.backends(2, {"weather": replace(WEATHER, last_probe_ms=9.0)})  # latency only: no line
        reporter.backends(3, {"weather": down})
        reporter.backends(4, {})
    lines = [r for r in caplog.records if getattr(r, "event", None) == "backend_status"]
    assert [r.getMessage() for r in lines] == [
        "backend weather: healthy (breaker closed, routable, 2 tools, endpoints 1/1 up)",
        "backend weather: unhealthy (breaker open, not routable, last error timeout, 2 tools, endpoints 1/1 up)",
        "backend weather: removed",
    ]
    assert {k: getattr(lines[1], k) for k in ("backend", "state", "breaker", "routable", "last_error", "tools", "view_version")} == {
        "backend": "weather", "state": "unhealthy", "breaker": "open", "routable": False, "last_error": "timeout", "tools": "2", "view_version": 3,
    }  # fmt: skip


def test_status_message_names_drain() -> None:
    assert "drained" in status_message(replace(WEATHER, drained=True))


def test_child_output_is_prefixed_in_text_mode_and_stays_json_in_json_mode() -> None:
    assert child_line("envoy", "hello", 13, as_json=False) == "envoy         | hello"
    own = json.dumps({"ts": "t", "level": "info", "logger": "x", "msg": "ready", "backends": 3})
    assert json.loads(child_line("control-plane", own, 13, as_json=True)) == {
        "child": "control-plane",
        **json.loads(own),
    }
    assert json.loads(child_line("envoy", "[warning] plain text", 13, as_json=True)) == {
        "child": "envoy",
        "msg": "[warning] plain text",
    }
    assert json.loads(child_line("envoy", "[1, 2]", 13, as_json=True)) == {"child": "envoy", "msg": "[1, 2]"}
