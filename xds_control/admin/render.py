"""How the view looks to a person: tables, one-line summaries, change lines (pure; no I/O).

Shared by `xds-control admin backends|watch` and the live status of
`xds-control up`, so every place shows a backend the same way:

* `backend_rows(backends, now, columns)` -> the cells of a table, one row per backend;
* `text_table(headers, rows)` -> aligned plain text; `backends_table(...)` both at once;
* `backend_line(status)` -> `weather: healthy, routable, 3 tools`-style summaries;
* `changed(before, after)` / `changes(...)` -> the backends whose summary changed, as values or lines;
* `status_table(...)` (in `live.py`) -> the same rows as a rich table, for terminals.

Columns are values (`Column(header, cell)`), so the admin table and the live
view pick their own set from one definition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from xds_control.view import BackendStatus


def ago(when: float | None, now: float) -> str:
    if when is None:
        return "-"
    seconds = max(0, int(now - when))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def tools(status: BackendStatus) -> str:
    return str(len(status.catalog.tools)) if status.catalog else "-"


def endpoints(status: BackendStatus) -> str:
    up = sum(1 for e in status.endpoints if e.state in ("healthy", "degraded"))
    return f"{up}/{len(status.endpoints)} up"


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[BackendStatus, float], str]


NAME = Column("NAME", lambda b, now: b.name)
STATE = Column("STATE", lambda b, now: str(b.state))
BREAKER = Column("BREAKER", lambda b, now: str(b.breaker))
ROUTABLE = Column("ROUTABLE", lambda b, now: "yes" if b.routable else "no")
ROUTABLE_OR_DRAINED = Column("ROUTABLE", lambda b, now: "drained" if b.drained else "yes" if b.routable else "no")
DRAINED = Column("DRAINED", lambda b, now: "yes" if b.drained else "no")
FAILURES = Column("FAILURES", lambda b, now: str(b.consecutive_failures))
LAST_PROBE = Column("LAST PROBE", lambda b, now: ms(b.last_probe_ms))
LAST_SUCCESS = Column("LAST SUCCESS", lambda b, now: ago(b.last_success, now))
LAST_ERROR = Column("LAST ERROR", lambda b, now: b.last_error or "-")
TOOLS = Column("TOOLS", lambda b, now: tools(b))
ENDPOINTS = Column("ENDPOINTS", lambda b, now: endpoints(b))

ADMIN_COLUMNS = (
    NAME,
    STATE,
    BREAKER,
    ROUTABLE,
    DRAINED,
    FAILURES,
    LAST_PROBE,
    LAST_SUCCESS,
    LAST_ERROR,
    TOOLS,
    ENDPOINTS,
)
"""`xds-control admin backends`: everything."""
LIVE_COLUMNS = (NAME, STATE, BREAKER, ROUTABLE_OR_DRAINED, LAST_PROBE, TOOLS, LAST_ERROR, ENDPOINTS)
"""The live status (`up`, `admin watch` on a terminal): what fits one line of a terminal (a drained backend's
ROUTABLE cell says `drained`: it is not routable, and that is why)."""


def backend_rows(
    backends: Iterable[BackendStatus], now: float, columns: Sequence[Column] = ADMIN_COLUMNS
) -> list[list[str]]:
    return [[column.cell(b, now) for column in columns] for b in backends]


def text_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    table = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table)


NO_BACKENDS = "no backends configured"


def backends_table(backends: Iterable[BackendStatus], now: float, columns: Sequence[Column] = ADMIN_COLUMNS) -> str:
    rows = backend_rows(backends, now, columns)
    return text_table([c.header for c in columns], rows) if rows else NO_BACKENDS


def backend_line(b: BackendStatus) -> str:
    """`weather: unhealthy, not routable, breaker open, drained, last error timeout`."""
    flags = [f"breaker {b.breaker}"] if b.breaker != "closed" else []
    flags += ["drained"] if b.drained else []
    flags += [f"last error {b.last_error}"] if b.last_error else []
    routable = "routable" if b.routable else "not routable"
    return f"{b.name}: {b.state}, {routable}" + "".join(f", {f}" for f in flags)


def change_line(b: BackendStatus) -> str:
    """`backend_line` plus what the change log also wants to see: tools and endpoints."""
    return f"{backend_line(b)}, {tools(b)} tools, endpoints {endpoints(b)}"


def changed(
    before: Mapping[str, BackendStatus] | None, after: Mapping[str, BackendStatus]
) -> tuple[list[BackendStatus], list[str]]:
    """Backends that are new or whose `change_line` differs (latency alone is no change), and names gone."""
    before = before or {}
    now = [b for name, b in after.items() if name not in before or change_line(before[name]) != change_line(b)]
    return now, [name for name in before if name not in after]


def changes(before: Mapping[str, BackendStatus] | None, after: Mapping[str, BackendStatus]) -> list[str]:
    """`changed` as lines: one per backend that is new, different or gone."""
    now, removed = changed(before, after)
    return [change_line(b) for b in now] + [f"{name}: removed" for name in removed]
