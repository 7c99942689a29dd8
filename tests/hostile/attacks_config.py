"""Attacks through the config file: an alias bomb and secrets in URLs, to `check` and to a hot reload."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.hostile.support import Finding, HostileStack, Scale, attack
from tests.support.procs import ROOT

# 342 bytes that expand to 9^9 (387 million) strings under unknown keys.
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e", "f", "g", "h"], "abcdefghi", strict=True)
)
USER, PASSWORD, QUERY = "operator", "hunter2-S3CRET-pw", "S3CRET-query-token"
SECRET_URL = f"http://{USER}:{PASSWORD}@127.0.0.1:9/mcp?token={QUERY}"


def run_check(path: str) -> tuple[int, str, int, float]:
    """`xds-control check -c PATH` as a process: exit code, output, peak RSS (bytes), seconds.

    The peak is the child's own VmHWM, sampled until it exits (the kernel's ru_maxrss would also count
    the pages of the forking test process it shared before exec)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "xds_control.cli", "check", "-c", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),
    )
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = next((line for line in status.splitlines() if line.startswith("VmHWM:")), "")
            if hwm:
                peak = max(peak, int(hwm.split()[1]) * 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.005)  # a sampling period, not a synchronisation
    assert proc.stdout is not None
    output = proc.stdout.read(1 << 20).decode(errors="replace")
    proc.stdout.close()
    return proc.returncode, output, peak, time.monotonic() - started


async def reload_with(stack: HostileStack, text: str, timeout: float = 30.0) -> str:
    """Write `text` over the running control plane's config; the `config reload rejected` line it logs."""
    good = stack.config_path.read_text()
    seen = len(stack.procs["control-plane"].lines)
    stack.write_config(text)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = list(stack.procs["control-plane"].lines)[seen:]
            found = [line for line in lines if "config reload" in line]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no reload line within {timeout}s:\n{stack.log()[-2000:]}")
    finally:
        stack.write_config(good)


@attack("config-alias-bomb", surface="config file: a 342-byte YAML alias bomb, to `check` and to a hot reload")
async def alias_bomb(stack: HostileStack, scale: Scale) -> Finding:
    bomb = stack.workdir / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    code, output, peak, seconds = await asyncio.to_thread(run_check, str(bomb))
    line = await reload_with(stack, ALIAS_BOMB)
    return Finding(
        output.strip().splitlines()[-1],
        {
            "check_rc": code,
            "check_peak_rss_mb": round(peak / 2**20, 1),
            "check_seconds": round(seconds, 2),
            "check_output_chars": len(output),
            "reload_line": line[-300:],
            "reload_line_chars": len(line),
        },
    )


@attack(
    "config-secret-url", surface="config file: a backend URL with user:password@ and ?token=, to `check` and reload"
)
async def secret_url(stack: HostileStack, scale: Scale) -> Finding:
    data = yaml.safe_load(stack.config_path.read_text())
    data["backends"].append({"name": "leaky", "url": SECRET_URL})
    text = yaml.safe_dump(data)
    path = stack.workdir / "leaky.yaml"
    path.write_text(text)
    code, output, _peak, _seconds = await asyncio.to_thread(run_check, str(path))
    line = await reload_with(stack, text)
    whole_log = stack.log()
    leaked = [s for s in (PASSWORD, QUERY) if s in output or s in whole_log]
    return Finding(
        output.strip().splitlines()[-1],
        {"check_rc": code, "reload_line": line[-300:], "leaked": leaked},
    )
