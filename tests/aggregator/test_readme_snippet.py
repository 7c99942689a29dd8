"""The README's SDK snippet, run as written against the aggregator: the tools and a result when a backend is
routable, the gateway's error on one line (not an ExceptionGroup traceback) when none is."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import pytest

from tests.aggregator.conftest import Fleet
from tests.support.procs import ROOT

pytestmark = pytest.mark.integration


def snippet(url: str) -> str:
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(import asyncio\nfrom mcp import Client.*?)```", text, re.S)
    assert code is not None, "the README's SDK snippet"
    return code.group(1).replace("http://127.0.0.1:10000/mcp", url)


async def run(code: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_the_readme_snippet_prints_the_gateways_error_on_one_line(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("weather")], healthy=()) as running:
        code, out = await run(snippet(running.url))
    assert code == 0, out
    assert out.strip().splitlines() == [out.strip()], out  # one line
    assert out.startswith("error -32050: cannot list tools: no backend is routable: weather (unknown)"), out
    assert "`xds-control admin backends` shows why" in out and "Traceback" not in out


async def test_the_readme_snippet_lists_and_calls(serve: Any, fleet: Fleet) -> None:
    async with serve([fleet.entry("weather")]) as running:
        code, out = await run(snippet(running.url))
    assert code == 0, out
    assert "weather_get_forecast" in out.splitlines()[0] and "Lisbon" in out, out
