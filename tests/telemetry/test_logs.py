"""Log formatting shared by every subcommand."""

from __future__ import annotations

import json
import logging

from xds_control.telemetry.logs import JsonFormatter, TextFormatter, setup_logging


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("xds_control.health", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_level_logger_message_and_extra_fields():
    line = JsonFormatter().format(record("backend %s changed state", "weather", backend="weather", to="unhealthy"))
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "xds_control.health"
    assert entry["msg"] == "backend weather changed state"
    assert entry["backend"] == "weather" and entry["to"] == "unhealthy"
    assert entry["ts"].endswith("Z")


def test_text_lines_append_extra_fields_as_key_value():
    line = TextFormatter().format(record("state change", backend="weather", reason="timeout"))
    assert line.endswith("WARNING xds_control.health: state change backend=weather reason=timeout")


def test_setup_logging_replaces_the_root_handler_and_quiets_http_clients():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("json", "debug")
        setup_logging("json", "debug")
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.DEBUG
        assert logging.getLogger("httpx").level == logging.WARNING
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
