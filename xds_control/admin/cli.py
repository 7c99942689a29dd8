"""`xds-control admin ...`: the admin API from a shell.

Every command takes `-c CONFIG` (address from `control_plane.admin`, token
from the env var named by `control_plane.admin_token_env`, else from the
control plane's admin cookie file) or `--address HOST:PORT` and `--token-env
NAME`; with neither, the default address 127.0.0.1:18001. Output is a table
(or one line) by default and JSON with `--json`. Every human-readable output
starts with one line naming the control plane it came from and why that
address (`control plane 127.0.0.1:18001 (the default: ...)`), so a default
address never answers silently for another gateway. Any admin error is one
`error: ...` line on stderr that names the address, and exit 1; a token the
control plane refuses is reported as such, with where the token came from.
The token is read from the environment or the cookie file only (never a
flag, so it stays out of `ps`) and never printed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from xds_control.admin.ports import NodeInfo, TypeStatus
from xds_control.admin.render import ago, backend_line, backends_table, text_table
from xds_control.cli_options import common_options, config_option, load_or_exit
from xds_control.config import ControlPlaneConfig
from xds_control.errors import Unauthorized, XdsControlError
from xds_control.view import BackendStatus

if TYPE_CHECKING:
    from xds_control.admin.client import AdminClient

DEFAULT_SOURCE = "the default: no -c CONFIG or --address given"


@dataclass(frozen=True)
class Connection:
    """Where the CLI dials, and where that address and the token came from (for people, never the token)."""

    target: str
    token: Callable[[], str | None] | None = None  # read at each mutating call
    source: str = DEFAULT_SOURCE  # why this address: --address, a config file, or the default
    token_from: str | None = None  # where the token is read from (a variable, the admin cookie file)

    @property
    def where(self) -> str:
        """`control plane 127.0.0.1:18001 (the default: ...)`: the first line of every human-readable output."""
        return f"control plane {self.target} ({self.source})"


def _connection(config_path: Path | None, address: str | None, token_env: str | None) -> Connection:
    # Lazy, as AdminClient in _run: every process the CLI starts loads this module, and the admin client
    # (grpclib, h2) is of no use to `xds-control serve`.
    from xds_control.admin.client import dial_target
    from xds_control.admin.cookie import token_source

    cp, source = ControlPlaneConfig(), DEFAULT_SOURCE
    if config_path is not None:
        cp = load_or_exit(config_path).control_plane
        source = f"control_plane.admin in {config_path}"
    if address is not None:
        try:
            target = dial_target(address)
        except ValueError:
            raise click.BadParameter("must be HOST:PORT", param_hint="--address") from None
        source = "--address"
        if config_path is None:  # the cookie of the control plane on that port
            cp = ControlPlaneConfig(admin=f"127.0.0.1:{target.rpartition(':')[2]}")
    else:
        target = dial_target(cp.admin)
    token, token_from = token_source(cp, token_env)
    return Connection(target, token, source, token_from)


def _error_text(exc: XdsControlError, connection: Connection) -> str:
    """One line for a failed admin command: what went wrong, at which control plane, and what to check."""
    if isinstance(exc, Unauthorized):
        token = connection.token() if connection.token is not None else None
        if token is None:
            return (
                f"{connection.where} refused the call: it needs the admin token and none was given "
                f"({connection.token_from} holds none; the control plane writes its cookie file at start when "
                "control_plane.admin_token_env is unset; else set that variable, or use --token-env NAME)"
            )
        return (
            f"{connection.where} refused the admin token from {connection.token_from}: it is not that control "
            "plane's token. Is this the control plane you meant? Name it with -c CONFIG or --address, "
            "or fix the token"
        )
    text = str(exc)
    if connection.target in text:  # already names the address (cannot reach ..., closed the stream, ...)
        return text if connection.source == "--address" else f"{text} ({connection.source})"
    return f"{connection.where}: {text}"


def _run(ctx: click.Context, action: Callable[[AdminClient], Awaitable[int | None]]) -> None:
    """Run `action` against the admin API; admin errors become one stderr line and exit 1."""
    from xds_control.admin.client import AdminClient

    connection: Connection = ctx.obj

    async def main() -> int | None:
        async with AdminClient(connection.target, connection.token, token_from=connection.token_from) as client:
            return await action(client)

    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:
        code = 130
    except XdsControlError as exc:
        click.echo(f"error: {_error_text(exc, connection)}", err=True)
        code = 1
    raise SystemExit(code or 0)


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    """-c/--address/--token-env/--json and the log options, resolved into ctx.obj before the command runs."""

    @config_option
    @click.option("--address", metavar="HOST:PORT", help="Admin API address (overrides the config).")
    @click.option(
        "--token-env", metavar="NAME", help="Environment variable holding the admin token (overrides admin_token_env)."
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @common_options
    @click.pass_context
    def wrapper(
        ctx: click.Context, config_path: Path | None, address: str | None, token_env: str | None, **kwargs: Any
    ) -> Any:
        ctx.obj = _connection(config_path, address, token_env)
        return ctx.invoke(func, ctx, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


# -- rendering ----------------------------------------------------------------------------------


def backend_json(status: BackendStatus, now: float) -> dict[str, Any]:
    """`now`: unix time of printing (`retry_after` is the seconds from it to the next chance of recovery)."""
    return {
        "name": status.name,
        "state": str(status.state),
        "breaker": str(status.breaker),
        "routable": status.routable,
        "drained": status.drained,
        "consecutive_failures": status.consecutive_failures,
        "consecutive_successes": status.consecutive_successes,
        "last_error": status.last_error,
        "last_probe_ms": status.last_probe_ms,
        "last_success": status.last_success,
        "retry_after": status.retry_after(now),
        "state_since": status.state_since,
        "tools": len(status.catalog.tools) if status.catalog else 0,
        "catalog_hash": status.catalog_hash,
        "endpoints": [
            {
                "url": e.url,
                "state": str(e.state),
                "last_probe_ms": e.last_probe_ms,
                "last_error": e.last_error,
                "address": e.address,
            }
            for e in status.endpoints
        ],
    }


def node_json(node: NodeInfo) -> dict[str, Any]:
    return {
        "node_id": node.node_id,
        "cluster": node.cluster,
        "role": node.role,
        "connected_since": node.connected_since,
        "types": {
            url: {"acked_version": t.acked_version, "nacked_version": t.nacked_version, "nack_detail": t.nack_detail}
            for url, t in node.types.items()
        },
    }


def _emit_backend(status: BackendStatus, as_json: bool, connection: Connection) -> None:
    if as_json:
        click.echo(json.dumps(backend_json(status, time.time())))
    else:
        click.echo(f"{connection.where}\n{backend_line(status)}")


# -- commands -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def admin() -> None:
    """Query and steer a running control plane over its admin gRPC API."""


@admin.command()
@_options
def backends(ctx: click.Context, as_json: bool) -> None:
    """Every backend: state, breaker, failures, last probe, tools, endpoints."""
    connection: Connection = ctx.obj

    async def action(client: AdminClient) -> None:
        statuses = await client.list_backends()
        if as_json:
            click.echo(json.dumps([backend_json(s, time.time()) for s in statuses], indent=2))
        else:
            click.echo(f"{connection.where}\n{backends_table(statuses, time.time())}")

    _run(ctx, action)


@admin.command()
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Exit after N views. The first is the whole view as it is on connect, each later one a change: "
    "--count 1 prints the current view and exits; a larger N waits for N-1 changes.",
)
@click.option("--once", is_flag=True, help="Print the current view and exit (the same as --count 1).")
@click.option(
    "--lines", "plain", is_flag=True, help="One line per update even on a terminal (default there: a live table)."
)
@_options
def watch(ctx: click.Context, as_json: bool, count: int | None, once: bool, plain: bool) -> None:
    """Show the whole view, then every change until Ctrl-C (or --count/--once): a live table on a terminal,
    else one line per view."""
    connection: Connection = ctx.obj
    if once:
        count = 1

    async def action(client: AdminClient) -> None:
        seen = 0
        live = None
        if not as_json and not plain and sys.stdout.isatty():
            from xds_control.admin.live import LiveStatus  # rich only where it is drawn

            live = LiveStatus()
            live.note = connection.where
            live.start()
        try:
            async for event in client.watch(reconnect=False):
                if live is not None:
                    live.update(event.version, event.backends)
                elif as_json:
                    click.echo(
                        json.dumps(
                            {
                                "version": event.version,
                                "backends": [backend_json(b, time.time()) for b in event.backends.values()],
                            }
                        )
                    )
                else:
                    if seen == 0:
                        click.echo(connection.where)
                    parts = "; ".join(backend_line(b) for b in event.backends.values()) or "no backends"
                    click.echo(f"{time.strftime('%H:%M:%S')} version {event.version}: {parts}")
                sys.stdout.flush()
                seen += 1
                if count is not None and seen >= count:
                    return
        finally:
            if live is not None:
                live.stop()

    _run(ctx, action)


def _mutating(name: str, method: str, help_text: str) -> None:
    @click.argument("backend")
    @_options
    def command(ctx: click.Context, as_json: bool, backend: str) -> None:
        async def action(client: AdminClient) -> None:
            _emit_backend(await getattr(client, method)(backend), as_json, ctx.obj)

        _run(ctx, action)

    command.__doc__ = help_text
    admin.command(name=name)(command)


_mutating("probe", "probe_now", "Probe BACKEND now and print its status after the verdict.")
_mutating("drain", "drain", "Take BACKEND out of routing by hand (Envoy endpoints go DRAINING).")
_mutating("undrain", "undrain", "Put a drained BACKEND back into routing.")
_mutating("reset", "reset_breaker", "Close BACKEND's circuit breaker and clear its failure count.")


@admin.command()
@_options
def nodes(ctx: click.Context, as_json: bool) -> None:
    """Connected Envoy nodes and the xDS version each has ACKed or NACKed, per type."""
    connection: Connection = ctx.obj

    async def action(client: AdminClient) -> None:
        found = await client.nodes()
        if as_json:
            click.echo(json.dumps([node_json(n) for n in found], indent=2))
            return
        click.echo(connection.where)
        if not found:
            click.echo("no Envoy nodes connected")
            return
        now = time.time()
        rows = []
        for n in found:
            types: list[tuple[str, TypeStatus | None]] = [*sorted(n.types.items())] or [("-", None)]
            for url, t in types:
                short = url.rsplit(".", 1)[-1]
                nack = f"{t.nacked_version}: {t.nack_detail}" if t and t.nacked_version else "-"
                rows.append(
                    [
                        n.node_id,
                        n.role or "-",
                        n.cluster or "-",
                        ago(n.connected_since, now),
                        short,
                        (t.acked_version if t else "") or "-",
                        nack,
                    ]
                )
        click.echo(text_table(["NODE", "ROLE", "CLUSTER", "CONNECTED", "TYPE", "ACKED", "NACKED"], rows))

    _run(ctx, action)
