"""The live status table for terminals (rich): `xds-control up` and `xds-control admin watch`.

    table = status_table(backends, now, version=7, endpoint="http://127.0.0.1:10000/mcp")
    render_text(table)                  # plain text, e.g. for tests

    with LiveStatus(Console()) as live:  # redraws in place; log lines scroll above it
        live.update(version, backends)

The cells are `render.backend_rows(..., LIVE_COLUMNS)`, the same as every other
view of a backend; this module adds only colour and the in-place redraw. The
table is redrawn when the view changes (the admin Watch stream sends a message
per version), not on a timer: probe latency alone does not bump the version,
so `LAST PROBE` is as of the last change.

While the table is live, stdout and (when it is the same terminal) stderr are
routed through it, and so is every logging handler that wrote to the real
stderr, so log lines and child output appear above the table instead of
tearing it.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from xds_control.admin.render import LIVE_COLUMNS, NO_BACKENDS, backend_rows
from xds_control.view import BackendStatus

STATE_STYLES = {
    "healthy": "green",
    "degraded": "yellow",
    "unhealthy": "bold red",
    "unauthenticated": "magenta",
    "unknown": "dim",
}
BREAKER_STYLES = {"closed": "", "open": "bold red", "half_open": "yellow"}


def status_table(
    backends: Iterable[BackendStatus],
    now: float,
    *,
    version: int | None = None,
    endpoint: str | None = None,
    note: str | None = None,
) -> Table:
    """The backends as a rich table (the columns of `render.LIVE_COLUMNS`)."""
    backends = list(backends)
    title = f"xds-control · {len(backends)} backend{'' if len(backends) == 1 else 's'}" + (
        f" · view {version}" if version is not None else ""
    )
    caption = " · ".join(
        part
        for part in (
            f"MCP endpoint {endpoint}" if endpoint else "",
            note or "",
            time.strftime("%H:%M:%S", time.localtime(now)),
        )
        if part
    )
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left", expand=False)
    headers = [c.header for c in LIVE_COLUMNS]
    for header in headers:
        table.add_column(header, no_wrap=header in ("NAME", "STATE", "BREAKER"))
    rows = backend_rows(backends, now, LIVE_COLUMNS)
    for row in rows:
        cells = dict(zip(headers, row, strict=True))
        styled = [Text(value, style=_style(header, value)) for header, value in cells.items()]
        table.add_row(*styled)
    if not rows:
        table.add_row(Text(NO_BACKENDS, style="dim"), *[""] * (len(headers) - 1))
    return table


def _style(header: str, value: str) -> str:
    if header == "STATE":
        return STATE_STYLES.get(value, "")
    if header == "BREAKER":
        return BREAKER_STYLES.get(value, "")
    if header == "ROUTABLE":
        return "green" if value == "yes" else "red"
    if header == "LAST ERROR" and value != "-":
        return "red"
    return ""


def render_text(renderable: RenderableType, width: int = 120) -> str:
    """A renderable as plain text (no colour codes)."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False).print(renderable)
    return buffer.getvalue()


class LiveStatus:
    """The table, redrawn in place on `update`; see the module docstring."""

    def __init__(self, console: Console | None = None, *, endpoint: str | None = None) -> None:
        self.console = console or Console(file=sys.stdout)
        self.endpoint = endpoint
        self.note: str | None = None
        self._version: int | None = None
        self._backends: Mapping[str, BackendStatus] = {}
        redirect_stderr = _same_terminal(self.console.file, sys.stderr)
        self._live = Live(
            self._table(),
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=True,
            redirect_stderr=redirect_stderr,
        )
        self._handlers: list[tuple[logging.StreamHandler[Any], IO[str]]] = []
        self.started = False

    def _table(self) -> Table:
        return status_table(
            self._backends.values(), time.time(), version=self._version, endpoint=self.endpoint, note=self.note
        )

    def start(self) -> None:
        if self.started:
            return
        real_stderr = sys.stderr
        self._live.start(refresh=True)
        self.started = True
        if sys.stderr is not real_stderr:  # redirected: send the log handlers there too
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is real_stderr:
                    handler.setStream(sys.stderr)
                    self._handlers.append((handler, real_stderr))

    def stop(self) -> None:
        if not self.started:
            return
        self.refresh()
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()
        self._live.stop()
        self.started = False

    def update(self, version: int, backends: Mapping[str, BackendStatus]) -> None:
        self._version, self._backends = version, dict(backends)
        self.refresh()

    def refresh(self) -> None:
        self._live.update(self._table(), refresh=True)

    def print(self, *lines: str) -> None:
        """Lines above the table (or plain lines when it is not running)."""
        for line in lines:
            self.console.print(Text(line), soft_wrap=True)

    def __enter__(self) -> LiveStatus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _same_terminal(a: IO[str], b: IO[str]) -> bool:
    try:
        return a.isatty() and b.isatty()
    except (AttributeError, ValueError):
        return False
