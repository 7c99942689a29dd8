"""The `xds-control` command line. `main(argv=None) -> int` so tests call it directly.

Each subcommand is a thin shell: it loads the config (exit 2 with every
problem named on a bad one) and hands it to the part that does the work.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from xds_control.admin.cli import admin
from xds_control.cli_options import common_options, config_option, load_or_exit, run_async
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


@cli.command()
@config_option
@common_options
def bootstrap(config_path: Path | None) -> None:
    """Print the Envoy bootstrap YAML (ADS over gRPC to the control plane)."""
    from xds_control.xds.bootstrap import render_bootstrap

    click.echo(render_bootstrap(load_or_exit(config_path)), nl=False)


@cli.command()
@config_option
@common_options
def serve(config_path: Path | None) -> None:
    """Run the control plane: health probes, xDS (ADS) server, admin gRPC API, metrics."""
    from xds_control.controlplane import serve_forever

    config = load_or_exit(config_path)
    raise SystemExit(run_async(serve_forever(config, config_path=config_path)))


@cli.command()
@config_option
@common_options
def aggregator(config_path: Path | None) -> None:
    """Run the MCP aggregation sidecar behind Envoy's /mcp."""
    from xds_control.aggregator.service import serve_forever

    config = load_or_exit(config_path)
    raise SystemExit(run_async(serve_forever(config)))


@cli.command()
@config_option
@click.option("--quiet", is_flag=True, help="Plain logs instead of the live status table.")
@common_options
def up(config_path: Path | None, quiet: bool) -> None:
    """Run the whole stack locally (no config: the bundled demo)."""
    from xds_control.runner import run_up

    config = load_or_exit(config_path) if config_path is not None else None
    raise SystemExit(run_async(run_up(config, config_path=config_path, quiet=quiet)))


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
