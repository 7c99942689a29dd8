"""What every `xds-control` subcommand shares: the log options, `-c CONFIG`, loading it, running a service.

A leaf below both `xds_control.cli` (the command group) and the subcommand groups of the parts
(`xds_control.admin.cli`), so neither imports the other's module to get these.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from xds_control.config import Config, load_config
from xds_control.errors import ConfigError, XdsControlError
from xds_control.telemetry.logs import report_error, setup_logging

EXIT_CONFIG = 2


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--log-format` and `--log-level`, on every subcommand."""

    @click.option(
        "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Log line format."
    )
    @click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        default="info",
        show_default=True,
    )
    @functools.wraps(func)
    def wrapper(*args: Any, log_format: str, log_level: str, **kwargs: Any) -> Any:
        setup_logging(log_format, log_level)
        return func(*args, **kwargs)

    return wrapper


config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="The YAML config file."
)


def report_config_error(exc: ConfigError) -> None:
    report_error(str(exc), fields=", ".join(issue.path or "<root>" for issue in exc.issues))


def load_or_exit(path: Path | None) -> Config:
    """The config at `path`; a bad one is reported (every issue, with its field path) and exits 2."""
    if path is None:
        raise click.UsageError("-c/--config is required")
    try:
        return load_config(path)
    except ConfigError as exc:
        report_config_error(exc)
        raise SystemExit(EXIT_CONFIG) from None


def run_async(coro: Any) -> int:
    """Run a service coroutine until it returns or SIGINT/SIGTERM cancels it.

    What the imports made lives as long as the process and is never garbage: it is frozen out of the cyclic
    collector first (`gc.freeze`), so the full collections that churn of sessions and streams triggers walk
    only what was made since, and never stall the event loop over the whole heap."""
    gc.collect()
    gc.freeze()
    try:
        return int(asyncio.run(coro) or 0)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        report_config_error(exc)
        return EXIT_CONFIG
    except XdsControlError as exc:
        report_error(f"error: {exc}")
        return 1
