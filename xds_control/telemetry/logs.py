"""Logging setup shared by every subcommand: `--log-format json|text`, `--log-level`."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


@functools.lru_cache(maxsize=4)
def _local_second(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))  # logging.Formatter's default asctime


def _msecs(created: float) -> int:
    return int((created - int(created)) * 1000)  # as LogRecord.msecs


class LineFormatter(logging.Formatter):
    """A formatter that also makes a line from its parts without a `LogRecord` (`line`): `log_fast`'s way."""

    def line(self, name: str, level: str, message: str, fields: dict[str, Any], created: float) -> str:
        raise NotImplementedError


class JsonFormatter(LineFormatter):
    """One JSON object per line: time, level, logger, message and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        if record.exc_info and record.exc_info[0] is not None:
            fields["exc"] = self.formatException(record.exc_info)
        return self.line(record.name, record.levelname, record.getMessage(), fields, record.created)

    def line(self, name: str, level: str, message: str, fields: dict[str, Any], created: float) -> str:
        entry: dict[str, Any] = {
            "ts": f"{_utc_second(int(created))}.{_msecs(created):03d}Z",
            "level": level.lower(),
            "logger": name,
            "msg": message,
        }
        entry.update(fields)
        return json.dumps(entry, default=str)


class TextFormatter(LineFormatter):
    """`time level logger: message key=value ...` with `extra=` fields appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        return base + "".join(f" {k}={v}" for k, v in extras.items())

    def line(self, name: str, level: str, message: str, fields: dict[str, Any], created: float) -> str:
        head = f"{_local_second(int(created))},{_msecs(created):03d} {level:<7} {name}: {message}"
        return head + "".join(f" {k}={v}" for k, v in fields.items())


# Loggers with a line per routed request: their lines are written in batches (`BatchedStreamHandler`).
BATCHED_LOGGERS = ("xds_control.aggregator.audit",)


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that formats each record at once but writes lines together: within `delay` seconds of
    the first waiting line (a timer on the running event loop), at once when `max_lines` wait, when no loop runs,
    and at `flush()` (logging's shutdown at exit). One write per batch instead of a write per record keeps a line
    per request cheap for the process and for whatever reads its stderr; at most `max_lines` lines wait."""

    def __init__(self, stream: Any, *, delay: float = 0.05, max_lines: int = 512) -> None:
        super().__init__(stream)
        self.delay, self.max_lines = delay, max_lines
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def add_line(self, line: str) -> None:
        """A line already formatted (`log_fast`), written as `emit` writes a record's."""
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            self._schedule()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self._schedule()

    def _schedule(self) -> None:
        if len(self._lines) >= self.max_lines:
            self.flush()
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.delay, self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._lines:
                return
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: the lines have nowhere to go
                pass


def log_fast(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """`logger.info(message, extra=fields)` for a line per request: with the handler `setup_logging` gives a
    batched logger, the same line made without a `LogRecord` (a fraction of the CPU); otherwise through logging
    as any line (tests' capture, a process that set up its own handlers)."""
    handlers = logger.handlers
    if not logger.propagate and len(handlers) == 1 and isinstance(handler := handlers[0], BatchedStreamHandler):
        formatter = handler.formatter
        if isinstance(formatter, LineFormatter):
            if logger.isEnabledFor(logging.INFO):
                handler.add_line(formatter.line(logger.name, "INFO", message, fields, time.time()))
            return
    logger.info(message, extra=fields)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    for name in BATCHED_LOGGERS:
        batched = logging.getLogger(name)
        for old in list(batched.handlers):
            batched.removeHandler(old)
        batched_handler = BatchedStreamHandler(sys.stderr)
        batched_handler.setFormatter(formatter)
        batched.addHandler(batched_handler)
        batched.propagate = False
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # Python warnings become log lines too (one JSON object each in json mode)
    for noisy in ("httpx", "httpx2", "httpcore", "uvicorn.access", "mcp", "watchfiles", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def json_logging() -> bool:
    """Is the process logging JSON lines (`--log-format json`)?"""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def report_error(message: str, **fields: Any) -> None:
    """A command's final error on stderr: a plain line, or in JSON mode one JSON log line like all the others."""
    if json_logging():
        logging.getLogger("xds_control.cli").error(message, extra=fields)
    else:
        print(message, file=sys.stderr, flush=True)
