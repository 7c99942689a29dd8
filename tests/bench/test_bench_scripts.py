"""Every benchmark under bench/ still runs: each script, at its smallest size, exits 0 and prints its figures.

The figures themselves are not judged here (speed and memory targets live in the benchmarks, never in
timed assertions); this only keeps a benchmark from rotting unnoticed (a benchmark that leans on a library's
behaviour breaks silently when that behaviour changes). FastMCP's proxy is left out
(`--no-fastmcp`): it needs its own venv from PyPI (bench/.venv-fastmcp). A traceback in the output is not a
failure by itself: the SDK's client may log one when a message reaches it as it closes.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.procs import Proc

RUN_TIMEOUT = 100.0

BENCHMARKS = {
    "http_client": (["bench/http_client.py", "--rounds", "1", "--requests", "20", "--concurrency", "2"], ["http11 ", "CPU us per request"]),
    "detection": (["bench/health/detection.py", "--runs", "1", "--interval", "0.2"], ["verdict -> Envoy switch"]),
    "probe_cost": (["bench/health/probe_cost.py", "--backends", "3", "--seconds", "1", "--warmup", "0.5"], ["per probe:", "target: under 25 %", "RSS target: under 200 MB"]),
    "xds_push": (
        ["bench/xds_push.py", "--flips", "3", "--sizes", "1", "--cold", "1", "--envoys", "2", "--envoy-backends", "1", "--envoy-flips", "2"],
        ["flip->ACK  backends=   1", "cold start clusters=1", "many Envoys envoys=2"],
    ),
    "failover": (
        ["bench/scale/failover.py", "--rounds", "1", "--modern", "1", "--legacy", "1"],
        ["round 1: kill -> flip in Envoy", "kill -> a new flip reaches Envoy: median", "failed calls: "],
    ),
    "aggregator_replicas": (
        ["bench/scale/aggregator_replicas.py", "--replicas", "1,2", "--concurrency", "4", "--seconds", "1", "--warmup", "0.5"],
        ["aggregators=1 concurrency=4:", "aggregators=2 concurrency=4:", "backend stub CPU"],
    ),
    "relay_floor": (["bench/aggregator/relay_floor.py", "--calls", "5", "--seconds", "1", "--blocks", "2"], ["relay", "interleaved with direct calls"]),
    "elicitation": (["bench/aggregator/elicitation.py", "--calls", "10"], ["elicitation round trip (median", "added by the relay:"]),
    "auth": (
        ["bench/auth.py", "--calls", "5", "--blocks", "2", "--concurrency", "2", "--seconds", "1", "--warmup", "0.5", "--pairs", "1"],
        ["added median latency (auth - open)", "authenticated / open calls/s"],
    ),
    "hostile": (["bench/hostile.py", "--small", "--only", "admin-report-outcomes"], ["admin-report-outcomes", "targets: stall < 100 ms"]),
    "sessions": (["bench/aggregator/sessions.py", "--sessions", "20"], ["opening  sessions: 20", "settled sessions again"]),
    "edge_post": (["bench/aggregator/edge_post.py", "--rounds", "1", "--requests", "5"], ["lean   CPU ms per request", "the plain POST saves"]),
    "tools_list": (
        ["bench/aggregator/tools_list.py", "--tools", "40", "--backends", "2", "--rounds", "3"],
        [
            '"list_page_http_server_side[legacy]"', '"list_page_http_server_side[2026-07-28]"', '"list_all_pages_http[2026-07-28]"',
            '"call_via_aggregator[client=2026-07-28,backend=legacy]"', '"call_direct[legacy]"',
        ],
    ),
    "calls": (
        [
            "bench/aggregator/calls.py", "--client", "both", "--calls", "5", "--calls16", "32", "--seconds", "1", "--no-fastmcp",
            "--list-backends", "3", "--list-rounds", "3", "--interleave-blocks", "2", "--interleave-calls", "3",
        ],
        [
            "added median latency, legacy, c=1, interleaved",
            "added median latency, modern, c=1, interleaved",
            "fail-fast: sdk modern call to the dead backend",
            "RSS after the run: control plane",
            "in process (bench/aggregator/tools_list.py --tools 60 --backends 3",
            "tools/list, 60 tools from 3 backends, modern, one page",
        ],
    ),
}  # fmt: skip


@pytest.mark.timeout(RUN_TIMEOUT + 20)
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_and_prints_its_figures(name: str) -> None:
    argv, expected = BENCHMARKS[name]
    proc = Proc([sys.executable, *argv], name=name)
    try:
        try:
            proc.popen.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not finish within {RUN_TIMEOUT:.0f} s; its stacks:\n{proc.stacks()}")
    finally:
        returncode = proc.stop()
    output = proc.output
    assert returncode == 0, f"{name} exited {returncode}:\n{output[-4000:]}"
    missing = [line for line in expected if line not in output]
    assert not missing, f"{name} did not print {missing}:\n{output[-4000:]}"
