"""How a view looks to a person, as pure functions: rows, text tables, change lines, the rich table."""

from __future__ import annotations

from dataclasses import replace

from xds_control.admin.live import render_text, status_table
from xds_control.admin.render import (
    ADMIN_COLUMNS,
    LIVE_COLUMNS,
    NO_BACKENDS,
    backend_line,
    backend_rows,
    backends_table,
    changed,
    changes,
    text_table,
)
from xds_control.view import BackendState, BackendStatus, BreakerState, Catalog, EndpointStatus

NOW = 1_700_000_100.0
TOOLS = Catalog.build(tools=[{"name": "a"}, {"name": "b"}, {"name": "c"}])


def weather(**changes: object) -> BackendStatus:
    status = BackendStatus(
        name="weather",
        state=BackendState.HEALTHY,
        last_probe_ms=12.4,
        last_success=NOW - 75,
        catalog=TOOLS,
        endpoints=(
            EndpointStatus("http://127.0.0.1:9001/mcp", BackendState.HEALTHY),
            EndpointStatus("http://127.0.0.1:9002/mcp"),
        ),
    )
    return replace(status, **changes)


def notes(**changes: object) -> BackendStatus:
    status = BackendStatus(
        name="notes",
        state=BackendState.UNHEALTHY,
        breaker=BreakerState.OPEN,
        consecutive_failures=7,
        last_error="connection_refused",
        endpoints=(EndpointStatus("http://127.0.0.1:9003/mcp", BackendState.UNHEALTHY),),
    )
    return replace(status, **changes)


def test_live_rows_carry_name_state_breaker_latency_tools_error_endpoints() -> None:
    assert [c.header for c in LIVE_COLUMNS] == [
        "NAME",
        "STATE",
        "BREAKER",
        "ROUTABLE",
        "LAST PROBE",
        "TOOLS",
        "LAST ERROR",
        "ENDPOINTS",
    ]
    assert backend_rows([weather(), notes()], NOW, LIVE_COLUMNS) == [
        ["weather", "healthy", "closed", "yes", "12ms", "3", "-", "1/2 up"],
        ["notes", "unhealthy", "open", "no", "-", "-", "connection_refused", "0/1 up"],
    ]


def test_admin_rows_add_drain_failures_and_last_success() -> None:
    (row,) = backend_rows([notes(drained=True, last_success=NOW - 7200)], NOW, ADMIN_COLUMNS)
    cells = dict(zip([c.header for c in ADMIN_COLUMNS], row, strict=True))
    assert cells["DRAINED"] == "yes" and cells["FAILURES"] == "7" and cells["LAST SUCCESS"] == "2h ago"


def test_text_tables_align_columns_and_say_when_empty() -> None:
    assert text_table(["A", "LONGER"], [["xx", "y"], ["z", ""]]) == "A   LONGER\nxx  y\nz"
    table = backends_table([weather(), notes()], NOW, LIVE_COLUMNS).splitlines()
    assert table[0].split() == [
        "NAME",
        "STATE",
        "BREAKER",
        "ROUTABLE",
        "LAST",
        "PROBE",
        "TOOLS",
        "LAST",
        "ERROR",
        "ENDPOINTS",
    ]
    assert table[1].split() == ["weather", "healthy", "closed", "yes", "12ms", "3", "-", "1/2", "up"]
    assert table[0].index("STATE") == table[1].index("healthy") == table[2].index("unhealthy")
    drained = backends_table([weather(drained=True), notes(drained=True)], NOW, LIVE_COLUMNS).splitlines()
    assert drained[1].split()[3] == "drained" and drained[2].split()[3] == "drained"  # why it is not routable
    assert backends_table([], NOW) == NO_BACKENDS


def test_a_one_line_summary() -> None:
    assert backend_line(weather()) == "weather: healthy, routable"
    assert (
        backend_line(notes(drained=True))
        == "notes: unhealthy, not routable, breaker open, drained, last error connection_refused"
    )


def test_changes_name_new_changed_and_removed_backends_but_not_latency() -> None:
    first = {"weather": weather(), "notes": notes()}
    assert changes(None, first) == [
        "weather: healthy, routable, 3 tools, endpoints 1/2 up",
        "notes: unhealthy, not routable, breaker open, last error connection_refused, - tools, endpoints 0/1 up",
    ]
    assert (
        changes(
            first, {"weather": weather(last_probe_ms=99.0, last_success=NOW), "notes": notes(consecutive_failures=9)}
        )
        == []
    )
    recovered = {"weather": weather(state=BackendState.DEGRADED)}
    now, removed = changed(first, recovered)
    assert [b.name for b in now] == ["weather"] and removed == ["notes"]
    assert changes(first, recovered)[-1] == "notes: removed"


def test_the_rich_table_renders_the_same_cells_with_a_title_and_caption() -> None:
    text = render_text(
        status_table([weather(), notes()], NOW, version=12, endpoint="http://127.0.0.1:10000/mcp"), width=140
    )
    assert "xds-control · 2 backends · view 12" in text
    assert "MCP endpoint http://127.0.0.1:10000/mcp" in text
    lines = [line for line in text.splitlines() if "weather" in line or "notes" in line]
    assert [[cell.strip() for cell in line.strip("│ ").split("│")] for line in lines] == backend_rows(
        [weather(), notes()], NOW, LIVE_COLUMNS
    )
    assert "\x1b[" not in text, "plain text: no colour codes"


def test_the_rich_table_without_backends_says_so() -> None:
    assert NO_BACKENDS in render_text(status_table([], NOW))
