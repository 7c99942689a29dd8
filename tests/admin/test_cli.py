"""`xds-control admin ...` through `xds_control.cli:main`, against a real admin server.

`main` runs `asyncio.run` itself, so each invocation runs in a worker thread
while the server keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.waiting import async_wait_until, free_port
from xds_control.admin.ports import NodeInfo, TypeStatus
from xds_control.cli import main
from xds_control.view import BackendState, Catalog

from .conftest import PLANTED_TOKEN, TOKEN_ENV, Harness, start_harness

BACKEND_FIELDS = {
    "name",
    "state",
    "breaker",
    "consecutive_failures",
    "last_error",
    "last_probe_ms",
    "tools",
    "routable",
    "drained",
    "endpoints",
}


def _main_keeping_root_logging(argv: list[str]) -> int:
    """`main` sets up root logging on the capture stream of the moment; undo that when it returns."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


async def run_cli(*argv: str) -> int:
    async with asyncio.timeout(30):
        return await asyncio.to_thread(_main_keeping_root_logging, list(argv))


async def test_backends_json_has_the_documented_fields(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    harness.store.set_state("weather", BackendState.HEALTHY)
    harness.store.update_backend(
        "weather", lambda s: replace(s, catalog=Catalog.build(tools=[{"name": "a"}, {"name": "b"}]))
    )
    assert await run_cli("admin", "backends", "--json", "--address", harness.target) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["weather", "calc"]
    assert all(set(r) >= BACKEND_FIELDS for r in rows)
    weather, calc = rows
    assert weather["state"] == "healthy" and weather["breaker"] == "closed" and weather["routable"] is True
    assert weather["tools"] == 2 and calc["tools"] == 0
    assert calc["state"] == "unknown" and calc["consecutive_failures"] == 0 and calc["last_error"] is None
    assert [e["url"] for e in calc["endpoints"]] == ["http://127.0.0.1:9002/mcp", "http://127.0.0.1:9003/mcp"]


async def test_backends_table_from_a_config_file(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "xds.yaml"
    config.write_text(
        f"control_plane:\n  admin: 0.0.0.0:{harness.server.port}\n"
    )  # a wildcard bind is dialled on loopback
    assert await run_cli("admin", "backends", "-c", str(config)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"control plane {harness.target} (control_plane.admin in {config})"
    assert lines[1].split()[:3] == ["NAME", "STATE", "BREAKER"]
    assert [line.split()[0] for line in lines[2:]] == ["weather", "calc"]


async def test_dead_address_is_one_error_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["backends"], ["drain", "weather"], ["nodes"], ["watch"]):
        assert await run_cli("admin", *command, "--address", f"127.0.0.1:{free_port()}") == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert len(err.splitlines()) == 1 and err.startswith("error: cannot reach the control plane admin API"), err


async def test_bad_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("admin", "backends", "--address", "nonsense") == 2
    assert "--address" in capsys.readouterr().err


async def test_mutating_commands(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    address = ("--address", harness.target)
    where = f"control plane {harness.target} (--address)"
    assert await run_cli("admin", "drain", "weather", *address) == 0
    assert harness.store.current.backends["weather"].drained
    assert capsys.readouterr().out.splitlines() == [where, "weather: unknown, not routable, drained"]
    assert await run_cli("admin", "undrain", "weather", "--json", *address) == 0
    assert json.loads(capsys.readouterr().out)["drained"] is False
    assert await run_cli("admin", "probe", "calc", *address) == 0
    assert harness.health.probed == ["calc"]
    assert capsys.readouterr().out.splitlines() == [where, "calc: healthy, routable"]
    assert await run_cli("admin", "reset", "calc", *address) == 0
    assert harness.health.resets == ["calc"]


async def test_unknown_backend_is_one_error_line(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("admin", "drain", "nope", "--address", harness.target) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"error: control plane {harness.target} (--address): no backend named 'nope'"


async def test_nodes(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("admin", "nodes", "--address", harness.target) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"control plane {harness.target} (--address)",
        "no Envoy nodes connected",
    ]
    harness.nodes.items.append(
        NodeInfo(
            node_id="envoy-1",
            cluster="gw",
            connected_since=1.0,
            types={
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": TypeStatus(
                    "4", "5", "bad endpoint"
                )
            },
        )
    )
    assert await run_cli("admin", "nodes", "--address", harness.target) == 0
    table = capsys.readouterr().out
    assert "envoy-1" in table and "ClusterLoadAssignment" in table and "5: bad endpoint" in table
    assert await run_cli("admin", "nodes", "--json", "--address", harness.target) == 0
    [node] = json.loads(capsys.readouterr().out)
    assert node["node_id"] == "envoy-1"
    assert node["types"]["type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"]["nacked_version"] == "5"


async def test_watch_prints_one_json_object_per_change(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    cli = asyncio.create_task(run_cli("admin", "watch", "--json", "--count", "2", "--address", harness.target))
    printed: list[str] = []

    def lines() -> list[str]:
        printed.extend(capsys.readouterr().out.splitlines())
        return printed

    await async_wait_until(lambda: len(lines()) >= 1, timeout=10, what="the first watch line")
    harness.store.set_drained("calc", True)
    assert await cli == 0
    lines()
    first, second = (json.loads(line) for line in printed)
    assert first["version"] == 1 and second["version"] == 2
    assert [b["name"] for b in second["backends"]] == ["weather", "calc"]
    assert second["backends"][1]["drained"] is True


@pytest.fixture
async def guarded(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setenv(TOKEN_ENV, PLANTED_TOKEN)
    h = await start_harness("0.0.0.0", admin_token_env=TOKEN_ENV)
    try:
        yield h
    finally:
        await h.server.stop(grace=0.5)


async def test_a_planted_token_never_appears_in_any_output(
    guarded: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = "planted-Wrong-0b1d2e3f-do-not-print"
    monkeypatch.setenv("WRONG_ADMIN_TOKEN", wrong)
    config = tmp_path / "xds.yaml"
    config.write_text(f"control_plane:\n  admin: 0.0.0.0:{guarded.server.port}\n  admin_token_env: {TOKEN_ENV}\n")
    runs = [
        (0, ["drain", "weather", "-c", str(config)]),
        (0, ["undrain", "weather", "--json", "--address", guarded.target, "--token-env", TOKEN_ENV]),
        (0, ["probe", "calc", "-c", str(config), "--log-level", "debug"]),
        (0, ["backends", "--json", "-c", str(config), "--log-level", "debug"]),
        (1, ["drain", "weather", "--address", guarded.target]),  # no token
        (
            1,
            [
                "reset",
                "weather",
                "--address",
                guarded.target,
                "--token-env",
                "WRONG_ADMIN_TOKEN",
                "--log-level",
                "debug",
            ],
        ),
        (1, ["drain", "weather", "-c", str(config), "--token-env", "WRONG_ADMIN_TOKEN", "--log-format", "json"]),
    ]
    outputs = []
    for expected, argv in runs:
        assert await run_cli("admin", *argv) == expected, argv
        out, err = capfd.readouterr()
        outputs.append(out + err)
        if expected == 1:  # (the in-process server's own log lines land on the same stderr)
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "token" in errors[0], err
    everything = "\n".join(outputs)
    assert guarded.health.probed == ["calc"]
    assert PLANTED_TOKEN not in everything
    assert wrong not in everything


async def test_a_refused_token_is_named_as_such_with_the_control_plane_and_where_the_token_came_from(
    guarded: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTHER_GATEWAY_TOKEN", "a-token-of-another-control-plane")
    where = f"control plane {guarded.target} (--address)"
    address = ("--address", guarded.target)
    assert await run_cli("admin", "drain", "weather", *address, "--token-env", "OTHER_GATEWAY_TOKEN") == 1
    [err] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err.startswith(f"error: {where} refused the admin token from $OTHER_GATEWAY_TOKEN: it is not"), err
    assert "-c CONFIG or --address" in err
    assert await run_cli("admin", "drain", "weather", *address) == 1
    [err] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err.startswith(f"error: {where} refused the call: it needs the admin token and none was given"), err
    assert not guarded.store.current.backends["weather"].drained


def test_without_config_or_address_the_default_address_is_named_as_the_default() -> None:
    from xds_control.admin.cli import DEFAULT_SOURCE, _connection

    connection = _connection(None, None, None)
    assert connection.where == f"control plane 127.0.0.1:18001 ({DEFAULT_SOURCE})"
    assert "no -c CONFIG or --address" in connection.where


async def test_watch_count_1_and_once_print_the_current_view_and_exit_on_a_stable_view(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    for flag in (("--count", "1"), ("--once",)):
        assert await run_cli("admin", "watch", *flag, "--lines", "--address", harness.target) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"control plane {harness.target} (--address)"
        assert len(lines) == 2 and "version 1: weather: unknown" in lines[1], lines
    assert await run_cli("admin", "watch", "--once", "--json", "--address", harness.target) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1  # JSON stays one object per view


async def test_watch_help_says_the_first_view_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("admin", "watch", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "The first is the whole view as it is on connect" in text
    assert "--count 1 prints the current view and exits" in text
    assert "--once" in text
