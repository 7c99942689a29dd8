"""The admin cookie between real processes: `xds-control serve` writes it, `xds-control admin` and the
aggregator's view source read it, a wrong token is refused with a message naming where it came from."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.procs import ROOT, Proc
from tests.support.stack import stack_config
from xds_control.admin.client import AdminClient, Outcome
from xds_control.admin.cookie import read_cookie, token_source
from xds_control.config import dump_config, load_config
from xds_control.errors import Unauthorized

pytestmark = pytest.mark.integration


def admin_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xds_control.cli", "admin", *argv],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=env,
        timeout=60,
    )


async def test_serve_writes_a_private_cookie_that_the_cli_and_the_aggregator_use(tmp_path: Path) -> None:
    cookie = tmp_path / "private" / "admin.cookie"
    config = stack_config(
        [{"name": "weather", "url": "http://127.0.0.1:9/mcp"}], control_plane={"admin_cookie_file": str(cookie)}
    )
    path = tmp_path / "xds.yaml"
    path.write_text(dump_config(config))
    serve = Proc([sys.executable, "-m", "xds_control.cli", "serve", "-c", str(path)], name="control-plane")
    try:
        await asyncio.to_thread(serve.wait_for_line, "READY", 60)
        line = await asyncio.to_thread(serve.wait_for_line, "written to", 10)
        assert str(cookie) in line
        token = read_cookie(cookie)
        assert token is not None and token not in serve.output
        assert cookie.stat().st_mode & 0o777 == 0o600 and cookie.parent.stat().st_mode & 0o077 == 0

        drained = await asyncio.to_thread(admin_cli, "drain", "weather", "-c", str(path))
        assert drained.returncode == 0, drained.stderr
        refused = await asyncio.to_thread(
            admin_cli, "undrain", "weather", "-c", str(path), "--token-env", "WRONG", env={"WRONG": "not-it"}
        )
        assert refused.returncode == 1
        [error] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert "$WRONG" in error and "not that control plane's" in error
        assert token not in refused.stderr + refused.stdout

        # What `xds-control aggregator -c` does: the token from the same config's cookie file.
        source, where = token_source(load_config(path).control_plane)
        assert str(cookie) in where
        async with AdminClient(config.admin_dial(), source, token_from=where) as client:
            assert await client.report_outcomes([Outcome("weather", successes=1)]) == []
        bad = yaml.safe_load(path.read_text())
        bad["control_plane"]["admin_cookie_file"] = str(tmp_path / "elsewhere.cookie")
        (tmp_path / "elsewhere.cookie").write_text("a-stale-cookie\n")
        source, where = token_source(load_config_from(bad, tmp_path).control_plane)
        async with AdminClient(config.admin_dial(), source, token_from=where) as client:
            with pytest.raises(Unauthorized, match="elsewhere.cookie"):
                await client.report_outcomes([Outcome("weather", successes=1)])
    finally:
        await asyncio.to_thread(serve.stop)
    assert not cookie.exists()  # removed at a clean stop


def load_config_from(data: dict, tmp_path: Path):  # type: ignore[no-untyped-def, type-arg]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    return load_config(other)
