"""Log formatting shared by every subcommand."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.support.waiting import async_wait_until
from xds_control.telemetry.logs import (
    BATCHED_LOGGERS,
    BatchedStreamHandler,
    JsonFormatter,
    TextFormatter,
    log_fast,
    setup_logging,
)


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


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_a_line_made_without_a_record_is_the_records_line(formatter):
    rec = record("tools/call echo alpha by alice: ok", principal="alice", duration_ms=1.25)
    rec.levelname, rec.levelno = "INFO", logging.INFO
    fields = {"principal": "alice", "duration_ms": 1.25}
    assert formatter.line(rec.name, "INFO", rec.getMessage(), fields, rec.created) == formatter.format(rec)


class Stream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def test_batched_lines_are_written_together_at_most_a_delay_later():
    async def main() -> Stream:
        stream = Stream()
        handler = BatchedStreamHandler(stream, delay=0.01)
        handler.setFormatter(TextFormatter())
        logger = logging.getLogger("xds_control.test.batched")
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
        for n in range(5):
            log_fast(logger, f"line {n}", {"n": n})
        assert stream.writes == []  # waiting for the timer
        await async_wait_until(lambda: stream.writes, timeout=5, what="the batch")
        return stream

    stream = asyncio.run(main())
    assert len(stream.writes) == 1
    lines = stream.writes[0].splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [f"line {n} n={n}" for n in range(5)]


def test_batched_lines_are_bounded_and_flushed_without_a_loop():
    stream = Stream()
    handler = BatchedStreamHandler(stream, max_lines=3)
    handler.setFormatter(JsonFormatter())
    handler.emit(record("no loop runs"))
    assert len(stream.writes) == 1  # no event loop: at once

    async def main() -> None:
        for n in range(7):
            handler.emit(record(f"line {n}"))
        assert [w.count("\n") for w in stream.writes[1:]] == [3, 3]  # never more than max_lines waiting
        handler.flush()  # logging's shutdown flushes what waits

    asyncio.run(main())
    assert [json.loads(line)["msg"] for w in stream.writes[1:] for line in w.splitlines()] == [
        f"line {n}" for n in range(7)
    ]


def test_setup_logging_batches_the_audit_lines_and_log_fast_falls_back_to_logging(caplog):
    root, audit = logging.getLogger(), logging.getLogger(BATCHED_LOGGERS[0])
    saved = (list(root.handlers), root.level, list(audit.handlers), audit.propagate)
    try:
        setup_logging("text", "info")
        assert isinstance(audit.handlers[0], BatchedStreamHandler) and not audit.propagate
    finally:
        root.handlers[:], audit.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        audit.propagate = saved[3]
    with caplog.at_level(logging.INFO, logger="xds_control.test.plain"):
        log_fast(logging.getLogger("xds_control.test.plain"), "through logging", {"principal": "bob"})
    assert [(r.getMessage(), r.principal) for r in caplog.records] == [("through logging", "bob")]
