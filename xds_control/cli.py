"""The `xds-control` command line. `main(argv=None) -> int` so tests call it directly.

Each subcommand is a thin shell: it loads the config (exit 2 with every
problem named on a bad one) and hands it to the part that does the work.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import click

from xds_control.admin.cli import admin
from xds_control.cli_options import (
    EXIT_CONFIG,
    common_options,
    config_option,
    load_or_exit,
    report_config_error,
    run_async,
)
from xds_control.config import Config
from xds_control.errors import ConfigError, ConfigIssue
from xds_control.schema import schema


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xds-control")
def cli() -> None:
    """xds-control: an MCP gateway on Envoy, with MCP-level health driving Envoy's routing."""


@cli.command()
@config_option
@common_options
def check(config_path: Path | None) -> None:
    """Validate a config file; exit 2 naming every bad field."""
    config = load_or_exit(config_path)
    click.echo(f"{config_path}: ok ({len(config.backends)} backends)")


port_type = click.IntRange(1, 65535)


@cli.command()
@config_option
@click.option("--node-id", help="This Envoy's node id (default: envoy.node_id).")
@click.option(
    "--role",
    type=click.Choice(["all", "edge", "egress"]),
    help="Listeners this Envoy serves: all (default), edge (public only), egress (egress only).",
)
@click.option("--admin-port", type=port_type, help="This Envoy's admin port (default: envoy.admin_port).")
@click.option("--listener-port", type=port_type, help="This Envoy's public listener port (default: listener.port).")
@click.option("--egress-port", type=port_type, help="This Envoy's egress listener port (default: egress.port).")
@click.option(
    "--control-plane",
    "control_planes",
    multiple=True,
    metavar="HOST:PORT",
    help="An xDS address to dial, repeatable, in failover order (default: envoy.control_plane_address).",
)
@common_options
def bootstrap(
    config_path: Path | None,
    node_id: str | None,
    role: str | None,
    admin_port: int | None,
    listener_port: int | None,
    egress_port: int | None,
    control_planes: tuple[str, ...],
) -> None:
    """Print the Envoy bootstrap YAML (ADS over gRPC to the control plane or planes), one per Envoy node."""
    from xds_control.config import host_port
    from xds_control.xds.bootstrap import NodeOverrides, render_bootstrap, token_placeholder, xds_token
    from xds_control.xds.profiles import NodeRole

    config = load_or_exit(config_path)
    try:
        dials = tuple(host_port(a, "--control-plane") for a in control_planes)
    except ValueError as exc:
        report_config_error(ConfigError(ConfigIssue("--control-plane", str(exc)), source="command line"))
        raise SystemExit(EXIT_CONFIG) from None
    node = NodeOverrides(
        node_id=node_id,
        role=NodeRole(role) if role else None,
        admin_port=admin_port,
        listener_port=listener_port,
        egress_port=egress_port,
        control_planes=dials,
    )
    try:
        xds_token(config)
    except ConfigError:  # the ADS token's variable is unset here: a placeholder for the deployment to fill
        click.echo(f"note: the ADS token is written as {token_placeholder(config)}: substitute it", err=True)
    click.echo(render_bootstrap(config, node, placeholder=True), nl=False)


@cli.command()
@config_option
@click.option("--xds", metavar="HOST:PORT", help="Serve ADS here instead of control_plane.xds.")
@click.option("--admin", "admin_address", metavar="HOST:PORT", help="Serve the admin API here (control_plane.admin).")
@click.option("--metrics", metavar="HOST:PORT", help="Serve metrics here instead of control_plane.metrics.")
@common_options
def serve(config_path: Path | None, xds: str | None, admin_address: str | None, metrics: str | None) -> None:
    """Run the control plane: health probes, xDS (ADS) server, admin gRPC API, metrics.

    Several control planes can run from one config, each with its own addresses (--xds, --admin, --metrics)."""
    from xds_control.controlplane import serve_forever

    config = load_or_exit(config_path)
    listen = {"xds": xds, "admin": admin_address, "metrics": metrics}
    try:
        config = config.with_control_plane(**listen)
    except ConfigError as exc:
        report_config_error(exc)
        raise SystemExit(EXIT_CONFIG) from None
    raise SystemExit(run_async(serve_forever(config, config_path=config_path, listen=listen)))


@cli.command()
@config_option
@click.option(
    "--replica",
    type=click.IntRange(0, 63),
    default=0,
    show_default=True,
    help="Which of aggregator.replicas this is: it listens on aggregator.port + N (metrics port + N).",
)
@common_options
def aggregator(config_path: Path | None, replica: int) -> None:
    """Run the MCP aggregation sidecar behind Envoy's /mcp."""
    from xds_control.aggregator.service import serve_forever

    config = load_or_exit(config_path)
    try:
        config = config.for_aggregator_replica(replica)
    except ConfigError as exc:
        report_config_error(exc)
        raise SystemExit(EXIT_CONFIG) from None

    def watch(on_config: Callable[[Config], None]) -> Awaitable[None]:
        from xds_control.health.reload import watch_config  # the file watcher the control plane uses

        return watch_config(config_path or "", lambda new: on_config(new.for_aggregator_replica(replica)), sighup=False)

    raise SystemExit(run_async(serve_forever(config, watch=watch if config_path is not None else None)))


@cli.command()
@config_option
@click.option("--quiet", is_flag=True, help="Plain logs instead of the live status table.")
@click.option(
    "--aggregators",
    type=click.IntRange(1, 64),
    help="Aggregator replicas behind Envoy's /mcp (default: aggregator.replicas; 1 for the demo).",
)
@common_options
def up(config_path: Path | None, quiet: bool, aggregators: int | None) -> None:
    """Run the whole stack locally (no config: the bundled demo).

    The demo's MCP endpoint listens on port 10000; set XDS_CONTROL_DEMO_PORT to use another (0: any free port).
    Every other port of the demo is picked free at start."""
    from xds_control.runner import run_up

    config = load_or_exit(config_path) if config_path is not None else None
    raise SystemExit(run_async(run_up(config, config_path=config_path, quiet=quiet, aggregators=aggregators)))


@cli.command("dev-token")
@config_option
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path), default=Path("dev-keys"), show_default=True,
              help="Directory of the development issuer's key (dev-issuer.pem) and jwks.json.")  # fmt: skip
@click.option("--init", is_flag=True, help="Make a new key and jwks.json in --keys first (replacing any).")
@click.option(
    "--alg", type=click.Choice(["ES256", "RS256"]), default="ES256", show_default=True, help="Key type for --init."
)
@click.option("--sub", default="dev-user", show_default=True, help="The token's subject (the principal).")
@click.option("--groups", default="", help="Comma-separated groups claim, e.g. ops,dev.")
@click.option("--scope", default="", help="Space-separated scope claim, e.g. 'mcp'.")
@click.option(
    "--issuer", default=None, help="iss claim; default: the first auth issuer with a jwks_file, else a dev one."
)
@click.option("--audience", default=None, help="aud claim; default: the config's auth.resource (its /mcp URL).")
@click.option("--lifetime", default="1h", show_default=True, help="How long the token is valid (5m, 1h, ...).")
@common_options
def dev_token(
    config_path: Path | None, keys_dir: Path, init: bool, alg: str, sub: str, groups: str, scope: str,
    issuer: str | None, audience: str | None, lifetime: str,
) -> None:  # fmt: skip
    """FOR DEVELOPMENT ONLY: a local issuer's keys and a signed token for the gateway (prints the token)."""
    from xds_control.auth import devtoken
    from xds_control.config import parse_duration

    config = load_or_exit(config_path) if config_path is not None else None
    if init:
        devtoken.init_dir(keys_dir, alg)  # type: ignore[arg-type]
        click.echo(
            f"wrote {keys_dir / devtoken.JWKS_FILE} (public) and {keys_dir / devtoken.PRIVATE_KEY_FILE} (private, 0600)",
            err=True,
        )
    if not (keys_dir / devtoken.PRIVATE_KEY_FILE).exists():
        raise click.UsageError(f"no key in {keys_dir}: run with --init first")
    if audience is None:
        if config is None:
            raise click.UsageError("give --audience or -c CONFIG (its auth.resource)")
        audience = config.auth_resource()
    if issuer is None:
        files = [i for i in (config.auth.issuers if config is not None and config.auth else []) if i.jwks_file]
        issuer = files[0].issuer if files else devtoken.DEV_ISSUER
    try:
        seconds = parse_duration(lifetime)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lifetime") from None
    key = devtoken.load_dir(keys_dir)
    claims = devtoken.claims(
        sub=sub, audience=audience, issuer=issuer, groups=[g for g in groups.split(",") if g], scope=scope or None,
        lifetime=seconds,
    )  # fmt: skip
    click.echo(key.sign(claims))


cli.add_command(admin)
cli.add_command(schema)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="xds-control", standalone_mode=False)
    except click.exceptions.Abort:
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
