"""Aggregator benchmark (issue 4): tools/call direct vs through the gateway vs FastMCP's proxy, both client families.

One demo backend (examples/backends/demo_server.py, tool `echo`), reached three ways:

  (a) direct    the backend's own /mcp;
  (b) gateway   the real stack, every part its own process on free ports: `xds-control serve`, Envoy,
                `xds-control aggregator`; clients call Envoy's public listener /mcp, the aggregator calls
                the backend through Envoy's egress listener (two Envoy hops). The config also names a
                backend nobody listens on (`dead`), for the fail-fast figure;
  (c) fastmcp   FastMCP 4.x's proxy (`create_proxy(url)`, Streamable HTTP), run from bench/.venv-fastmcp,
                which this script creates on first use (`pip install 'fastmcp>=4,<5'` from PyPI, 30-60 s);
  (d) envoy hop the backend through Envoy's egress listener only (the aggregator's own route to it): one
                Envoy hop, no aggregator. (b) has two such hops, so (b)-(a) splits into 2 x ((d)-(a)) for
                Envoy and the rest for the aggregator, printed under the targets.

For each: tools/call median / p99 latency and calls/s at concurrency 1 and 16, for legacy clients
(`initialize`, one session per worker) and 2026-07-28 clients (no session). Closed loop: N workers, each
with its own client, each sending its next call when the previous answer arrived; calls/s = answered calls
/ wall time. Two load generators, each printed with its own CPU cost per call (the `client` CPU column):
`raw` (JSON-RPC over the project's HTTP/1.1 client, LeanHttp; the lean one, the figures the targets are
judged on; `--raw-http httpx2` puts it on httpx2, at about 2 ms of CPU per call instead of 0.3) and `sdk`
(`mcp.Client`, what applications use; its own CPU per call is 2-5.5 ms, several times raw's, and on a 2-core machine
the client competes with the servers for the cores, which caps calls/s at concurrency 16).
The CPU table says where each call's CPU goes (ms per call, from /proc/PID/stat, 10 ms ticks).

Then the added latency as judged: (a), (b) and (d) at c=1 with the raw client in alternating blocks (20 rounds
of 25 calls each by default), so that the machine's drift over the run, which moves one target's median by
more than the 2 ms target between cells minutes apart, falls on all three alike; (b)-(a) is the median over
rounds of the difference of the round's medians. The sequential cells' difference is printed beside it.

Then: the fail-fast error of a call to the unroutable backend through (b); VmRSS of the control plane and
the aggregator after the run; and `tools/list` of a merged catalog of 200 backends x 20 tools (4,000 tools,
prefix naming) through a second real stack (200 backend names, all served by one demo process: the control
plane probes each, Envoy has a cluster for each, the aggregator merges them), plus the in-process figures of
bench/aggregator/tools_list.py --backends 200 --no-calls (merge time, server-side time of one page).

Run:   .venv/bin/python bench/aggregator/calls.py               (about 5-6 minutes on 2 cores)
Short: .venv/bin/python bench/aggregator/calls.py --client raw --calls 100 --calls16 400 --fastmcp-session fresh --no-list
       (about 1.5 minutes)
Flags: --client raw|sdk|both, --calls N (per cell at concurrency 1), --calls16 N (at 16), --seconds S (cap per
cell), --interleave-blocks N (0: skip), --interleave-calls N, --no-fastmcp, --fastmcp-session fresh|shared|both, --no-list, --list-backends N, --list-rounds N,
--backend-family both|legacy|modern.
Targets (issue 4): (b)-(a) median under 2 ms (interleaved); (b) >= 2x (c) calls/s; modern >= half of legacy calls/s;
fail-fast median under 5 ms; control plane + aggregator RSS under 150 MB; tools/list at 4,000 tools under
10 ms median. Figures only: nothing here fails on a target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from tests.aggregator.support import MODERN, mcp_client  # noqa: E402
from tests.support.procs import Proc, unwind_on_sigterm  # noqa: E402
from tests.support.stack import envoy_binary, stack_config  # noqa: E402
from tests.support.waiting import async_wait_until, free_port  # noqa: E402
from xds_control.config import dump_config  # noqa: E402
from xds_control.http11 import HttpClient  # noqa: E402
from xds_control.runner.plan import cli_argv, envoy_argv  # noqa: E402
from xds_control.xds.bootstrap import render_bootstrap  # noqa: E402

FASTMCP_VENV = ROOT / "bench" / ".venv-fastmcp"
FASTMCP_REQUIREMENT = "fastmcp>=4,<5"
LEGACY_VERSION = "2025-11-25"
FAMILIES = ("legacy", MODERN)
CONCURRENCY = (1, 16)
WARMUP = 5  # calls per worker before the clock starts (connections, sessions, the SDK's tool list)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes ------------------------------------------------------------------------------------


def child(argv: list[str] | tuple[str, ...], name: str, env: dict[str, str] | None = None) -> Proc:
    """A child in its own process group that the kernel kills if this process dies (setpriv --pdeathsig),
    so nothing outlives the benchmark, even a SIGKILLed one. Start children from the main thread only:
    the parent-death signal follows the thread that forked."""
    return Proc(["setpriv", "--pdeathsig", "KILL", "--", *argv], env=env, name=name)


def ready_url(proc: Proc, timeout: float = 30) -> str:
    return proc.wait_for_line("READY", timeout=timeout).split()[-1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pss_mb(pid: int) -> float:
    """Proportional set size: pages shared with other processes (libpython, libcrypto, pydantic-core, ...)
    count by their share. A sum of PSS is what the processes cost together; a sum of RSS counts shared pages
    once per process."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass
class Target:
    key: str  # direct | gateway | fastmcp | fastmcp-shared
    label: str
    url: str
    tool: str
    procs: dict[str, int]  # role -> pid, for the CPU table


@dataclass
class Stack:
    targets: list[Target] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    gateway: Target | None = None
    dead_tool: str = "dead_echo"
    healthz: str = ""


def ensure_fastmcp_venv() -> Path:
    """bench/.venv-fastmcp with FastMCP 4.x, created once (pip from PyPI). A `*` .gitignore keeps git quiet."""
    python = FASTMCP_VENV / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", "import fastmcp"], capture_output=True).returncode == 0:
        return python
    print(f"creating {FASTMCP_VENV.relative_to(ROOT)} (pip install '{FASTMCP_REQUIREMENT}'; once)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(FASTMCP_VENV)
    (FASTMCP_VENV / ".gitignore").write_text("*\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", FASTMCP_REQUIREMENT], check=True, timeout=600)
    return python


def fastmcp_version(python: Path) -> str:
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import fastmcp, mcp, importlib.metadata as m; print(fastmcp.__version__, m.version('mcp'))",
        ],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


def start_gateway(
    backends: list[dict[str, Any]], workdir: Path, procs: list[Proc], **sections: Any
) -> tuple[Any, dict[str, int]]:
    """`xds-control serve`, Envoy and `xds-control aggregator` for `backends`, every port free; appends to `procs`.
    `sections` override config sections (stack_config)."""
    config = stack_config(backends, **sections)
    config_path = workdir / "xds-control.yaml"
    config_path.write_text(dump_config(config))
    bootstrap = workdir / "envoy.yaml"
    bootstrap.write_text(render_bootstrap(config))
    plane = child(list(cli_argv(sys.executable, "serve", str(config_path), "warning")), "control-plane")
    procs.append(plane)
    plane.wait_for_line("READY xds=", timeout=60)
    envoy = child(list(envoy_argv(envoy_binary(), str(bootstrap), "warning")), "envoy")
    procs.append(envoy)
    aggregator = child(list(cli_argv(sys.executable, "aggregator", str(config_path), "warning")), "aggregator")
    procs.append(aggregator)
    ready_url(aggregator, timeout=60)
    return config, {"control-plane": plane.popen.pid, "envoy": envoy.popen.pid, "aggregator": aggregator.popen.pid}


def start_backend(procs: list[Proc], name: str, *args: str) -> tuple[str, int]:
    backend = child(
        [sys.executable, "-m", "examples.backends.demo_server", "--name", name, "--port", "0", *args], f"backend-{name}"
    )
    procs.append(backend)
    return ready_url(backend), backend.popen.pid


@contextlib.contextmanager
def stopping(procs: list[Proc]) -> Iterator[list[Proc]]:
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=10)


@contextlib.contextmanager
def running_stack(args: argparse.Namespace, workdir: Path) -> Iterator[Stack]:
    """Backend, control plane, Envoy, aggregator (and FastMCP's proxies) as processes; all stopped on exit."""
    stack = Stack()
    with stopping([]) as procs:
        backend_url, backend_pid = start_backend(procs, "alpha", "--family", args.backend_family)
        stack.pids["backend"] = backend_pid
        stack.targets.append(Target("direct", "(a) direct", backend_url, "echo", {"backend": backend_pid}))

        dead = {"name": "dead", "url": f"http://127.0.0.1:{free_port()}/mcp"}  # nothing listens there
        config, pids = start_gateway([{"name": "alpha", "url": backend_url}, dead], workdir, procs)
        stack.pids.update(pids)
        stack.gateway = Target(
            "gateway",
            "(b) gateway",
            config.public_url(),
            "alpha_echo",
            {k: stack.pids[k] for k in ("backend", "envoy", "aggregator", "control-plane")},
        )
        stack.targets.append(stack.gateway)
        stack.healthz = f"http://{config.aggregator.address}:{config.aggregator.port}/healthz"

        if not args.no_fastmcp:
            python = ensure_fastmcp_venv()
            print(f"fastmcp, mcp in {FASTMCP_VENV.relative_to(ROOT)}: {fastmcp_version(python)}", flush=True)
            sessions = ["fresh", "shared"] if args.fastmcp_session == "both" else [args.fastmcp_session]
            for session in sessions:
                proxy = child(
                    [
                        str(python),
                        str(Path(__file__).with_name("fastmcp_proxy.py")),
                        "--url",
                        backend_url,
                        "--session",
                        session,
                    ],
                    f"fastmcp-{session}",
                )
                procs.append(proxy)
                key = "fastmcp" if session == "fresh" else "fastmcp-shared"
                label = "(c) fastmcp" if session == "fresh" else "(c') fastmcp shared"
                stack.pids[key] = proxy.popen.pid
                stack.targets.append(
                    Target(key, label, ready_url(proxy), "echo", {"backend": backend_pid, key: proxy.popen.pid})
                )
        stack.targets.append(
            Target(
                "envoy",
                "(d) envoy hop",
                config.egress_url("alpha"),
                "echo",
                {"backend": backend_pid, "envoy": pids["envoy"]},
            )
        )
        yield stack


async def wait_gateway_ready(healthz: str, target: Target, routable: int, tools: int, timeout: float = 60) -> None:
    """The aggregator has every catalog (`routable` backends, `tools` tools) and Envoy routes a call through both listeners."""

    async def complete() -> bool:
        async with httpx2.AsyncClient(trust_env=False) as http:
            health = (await http.get(healthz)).json()
        return health["backends"]["routable"] >= routable and health["catalog"]["tools"] >= tools

    await async_wait_until(
        complete, timeout=timeout, interval=0.1, what=f"the aggregator to see {routable} backends, {tools} tools"
    )

    async def answers() -> bool:
        async with RawClient(target.url, MODERN) as client:
            return (await client.call(target.tool)) is None

    await async_wait_until(answers, timeout=timeout, interval=0.1, what="a call through Envoy and the aggregator")


# -- load generators --------------------------------------------------------------------------------


@dataclass
class LeanAnswer:
    status_code: int
    headers: dict[str, str]  # lower-case names
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


class LeanHttp:
    """The raw load generator's HTTP by default: the project's keep-alive HTTP/1.1 client (xds_control.http11,
    llhttp), the part of httpx2's AsyncClient that RawClient uses. httpx2 cost the generator about 2 ms of CPU
    per call, as much as the MCP backend it measures, and on 2 cores the generator competes with the stack
    for them (`--raw-http httpx2` measures with httpx2 as before)."""

    def __init__(self, max_idle: int = 4) -> None:
        self.client = HttpClient(None, max_idle=max_idle)

    async def request(
        self, method: str, url: str, *, headers: dict[str, str], content: bytes | str | None = None
    ) -> LeanAnswer:
        body = content.encode() if isinstance(content, str) else content
        async with self.client.stream(method, url, headers=headers, content=body) as response:
            data = b"".join([chunk async for chunk in response.aiter_bytes()])
        return LeanAnswer(response.status_code, response.headers, data)

    async def post(self, url: str, *, headers: dict[str, str], content: bytes | str) -> LeanAnswer:
        return await self.request("POST", url, headers=headers, content=content)

    async def delete(self, url: str, *, headers: dict[str, str]) -> LeanAnswer:
        return await self.request("DELETE", url, headers=headers)

    async def aclose(self) -> None:
        await self.client.aclose()


RAW_HTTP = ["http11"]  # --raw-http


def raw_http(connections: int = 4) -> LeanHttp | httpx2.AsyncClient:
    if RAW_HTTP[0] == "http11":
        return LeanHttp(max_idle=connections)
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.AsyncClient(trust_env=False, timeout=httpx2.Timeout(30), limits=limits)


def parse_body(response: httpx2.Response | LeanAnswer, want_id: int) -> dict[str, Any]:
    """The JSON-RPC message answering `want_id`, from a JSON or an SSE body."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for frame in response.text.split("\n\n"):
            for line in frame.splitlines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("id") == want_id:
                        return message
        raise ValueError(f"no answer to request {want_id} in the SSE body (HTTP {response.status_code})")
    return response.json()


class RawClient:
    """tools/call as plain JSON-RPC (docs/dev/mcp-sdk.md section 5) over `raw_http()`: legacy with a session
    (initialize, initialized, calls, DELETE) or 2026-07-28 (one POST per call, no session)."""

    def __init__(self, url: str, mode: str, http: LeanHttp | httpx2.AsyncClient | None = None) -> None:
        self.url, self.mode = url, mode
        self._own = http is None
        self.http = http or raw_http()
        self.ids = itertools.count(1)
        self.headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        self.meta: dict[str, Any] = {}

    async def __aenter__(self) -> RawClient:
        if self.mode == "legacy":
            init = {
                "protocolVersion": LEGACY_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            }
            response = await self.http.post(
                self.url,
                content=json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}),
                headers=self.headers,
            )
            result = parse_body(response, 0)["result"]
            self.headers = {
                **self.headers,
                "Mcp-Session-Id": response.headers["mcp-session-id"],
                "MCP-Protocol-Version": result["protocolVersion"],
            }
            await self.http.post(
                self.url, content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}', headers=self.headers
            )
        else:
            self.headers = {**self.headers, "MCP-Protocol-Version": self.mode}
            self.meta = {
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": self.mode,
                    "io.modelcontextprotocol/clientCapabilities": {},
                    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
                }
            }
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if "Mcp-Session-Id" in self.headers:
                with contextlib.suppress(httpx2.HTTPError, OSError):
                    await self.http.delete(self.url, headers=self.headers)
        finally:
            if self._own:
                await self.http.aclose()

    async def rpc(self, method: str, params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        """One request; the JSON-RPC message answering it."""
        request_id = next(self.ids)
        headers = self.headers
        if self.mode != "legacy":
            params = {**params, **self.meta}
            headers = {**headers, "Mcp-Method": method, **({"Mcp-Name": name} if name is not None else {})}
        response = await self.http.post(
            self.url,
            content=json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}),
            headers=headers,
        )
        return parse_body(response, request_id)

    async def call(self, tool: str) -> int | None:
        """One tools/call of `tool` with {"text": "x"}: None when it answered "x", else the error code (or -1)."""
        message = await self.rpc("tools/call", {"name": tool, "arguments": {"text": "x"}}, name=tool)
        if "error" in message:
            return int(message["error"].get("code", -1))
        result = message["result"]
        return None if not result.get("isError") and result["content"][0]["text"] == "x" else -1

    async def list_page(self, cursor: str | None) -> tuple[int, str | None]:
        """One tools/list page: (tools on it, next cursor)."""
        message = await self.rpc("tools/list", {"cursor": cursor} if cursor else {})
        result = message["result"]
        return len(result["tools"]), result.get("nextCursor")


class SdkClient:
    """tools/call through `mcp.Client` (one per worker, with its own httpx2 client)."""

    def __init__(self, url: str, mode: str, http: httpx2.AsyncClient | None = None) -> None:
        self.url, self.mode = url, mode
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> SdkClient:
        self.client = await self._stack.enter_async_context(mcp_client(self.url, self.mode))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def call(self, tool: str) -> int | None:
        try:
            result = await self.client.call_tool(tool, {"text": "x"})
        except MCPError as exc:
            return exc.code
        return None if not result.is_error and result.content[0].text == "x" else -1  # type: ignore[union-attr]

    async def list_page(self, cursor: str | None) -> tuple[int, str | None]:
        page = await self.client.list_tools(cursor=cursor)
        return len(page.tools), page.next_cursor


CLIENTS: dict[str, Callable[..., Any]] = {"raw": RawClient, "sdk": SdkClient}


# -- one measurement --------------------------------------------------------------------------------


@dataclass
class Cell:
    samples: list[float]  # ms per call
    wall: float
    failures: dict[int, int]  # error code -> count (-1: a wrong answer)
    cpu_ms: dict[str, float]  # role -> CPU ms per call

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def p99(self) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]

    @property
    def rate(self) -> float:
        return len(self.samples) / self.wall if self.wall > 0 else float("nan")


async def measure(
    client_kind: str,
    target: Target,
    tool: str,
    mode: str,
    concurrency: int,
    calls: int,
    seconds: float,
    expect: int | None = None,
) -> Cell:
    """`calls` calls (or what fits in `seconds`) from `concurrency` workers after WARMUP calls each."""
    ready = asyncio.Barrier(concurrency + 1)
    start, done = asyncio.Event(), asyncio.Barrier(concurrency + 1)
    budget = itertools.count()
    samples: list[float] = []
    failures: dict[int, int] = {}
    deadline = [0.0]
    shared = raw_http(concurrency * 2) if client_kind == "raw" else None

    async def worker() -> None:
        try:
            async with CLIENTS[client_kind](target.url, mode, shared) as client:
                for _ in range(WARMUP):
                    await client.call(tool)
                await ready.wait()
                await start.wait()
                while next(budget) < calls and time.perf_counter() < deadline[0]:
                    began = time.perf_counter()
                    code = await client.call(tool)
                    samples.append((time.perf_counter() - began) * 1000)
                    if code != expect:
                        failures[code if code is not None else 0] = failures.get(code if code is not None else 0, 0) + 1
                await done.wait()
        except BaseException:
            ready.abort()
            done.abort()
            raise

    try:
        async with asyncio.timeout(seconds + 90), asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
            await ready.wait()
            cpu_before = {role: cpu_seconds(pid) for role, pid in target.procs.items()} | {"client": own_cpu_seconds()}
            began = time.perf_counter()
            deadline[0] = began + seconds
            start.set()
            await done.wait()
            wall = time.perf_counter() - began
            cpu_after = {role: cpu_seconds(pid) for role, pid in target.procs.items()} | {"client": own_cpu_seconds()}
    finally:
        if shared is not None:
            await shared.aclose()
    n = max(1, len(samples))
    return Cell(samples, wall, failures, {role: (cpu_after[role] - cpu_before[role]) * 1000 / n for role in cpu_after})


@dataclass
class Interleaved:
    """c=1 raw calls to several targets in alternating blocks, one warm client each: a sequence of cells, one
    target after another, lets the machine's drift (here the same direct call's median moved by 1.7 ms
    between runs minutes apart) land in the difference between two targets; alternating blocks spread it
    over all of them alike. `samples[key][i]`: ms per call of block i."""

    samples: dict[str, list[list[float]]]

    def median(self, key: str) -> float:
        return statistics.median([x for block in self.samples[key] for x in block])

    def added(self, key: str, base: str = "direct") -> float:
        """The median over blocks of (this block's median) - (the adjacent base block's median)."""
        return statistics.median(
            statistics.median(b) - statistics.median(a)
            for a, b in zip(self.samples[base], self.samples[key], strict=True)
        )

    @property
    def shape(self) -> str:
        first = next(iter(self.samples.values()))
        return f"{len(first)} blocks of {len(first[0])} calls per target"


async def measure_interleaved(targets: list[Target], mode: str, blocks: int, per_block: int) -> Interleaved:
    """`blocks` rounds; in each, `per_block` calls to every target in turn (the order reversed every other
    round, so no target always follows the same one). Any call that does not answer "x" is an error."""
    samples: dict[str, list[list[float]]] = {t.key: [] for t in targets}
    async with contextlib.AsyncExitStack() as stack:
        clients = {t.key: await stack.enter_async_context(RawClient(t.url, mode)) for t in targets}
        for target in targets:
            for _ in range(WARMUP):
                await clients[target.key].call(target.tool)
        for round_ in range(blocks):
            for target in targets if round_ % 2 == 0 else targets[::-1]:
                block = []
                for _ in range(per_block):
                    began = time.perf_counter()
                    code = await clients[target.key].call(target.tool)
                    block.append((time.perf_counter() - began) * 1000)
                    if code is not None:
                        raise RuntimeError(f"{target.label}: a call answered {code}, not 'x'")
                samples[target.key].append(block)
    return Interleaved(samples)


# -- the run ----------------------------------------------------------------------------------------


def fmt(value: float, width: int = 6, digits: int = 2) -> str:
    return f"{value:{width}.{digits}f}"


def family_name(mode: str) -> str:
    return "legacy" if mode == "legacy" else "modern"


def print_call_table(results: dict[tuple[str, str, int, str], Cell], stack: Stack, clients: list[str]) -> None:
    keys = [t.key for t in stack.targets]
    labels = {t.key: t.label for t in stack.targets}
    print("\ntools/call: median / p99 latency (ms), calls/s; closed loop, one client per worker")
    head = f"{'client':6} {'family':6} {'conc':>4} |" + "|".join(f" {labels[k]:^25} " for k in keys)
    head += "| (b)-(a) med | (b)/(c) c/s"
    print(head)
    print("-" * len(head))
    for client, mode, conc in itertools.product(clients, FAMILIES, CONCURRENCY):
        row = f"{client:6} {family_name(mode):6} {conc:>4} |"
        for key in keys:
            cell = results.get((client, mode, conc, key))
            if cell is None:
                row += f" {'-':^25} |"
                continue
            errors = sum(cell.failures.values())
            row += f" {fmt(cell.median)} / {fmt(cell.p99, 6)} {cell.rate:6.0f}/s{'!' if errors else ' '}|"
        a, b, c = (results.get((client, mode, conc, k)) for k in ("direct", "gateway", "fastmcp"))
        row += f" {fmt(b.median - a.median, 8) if a and b else '-':>11} |"
        row += f" {b.rate / c.rate:8.1f}x" if b and c else "           -"
        print(row)
    failed = {k: v.failures for k, v in results.items() if v.failures}
    if failed:
        print(
            "  ! calls that did not answer 'x' (error code: count): "
            + "; ".join(f"{k}: {v}" for k, v in failed.items())
        )


def print_cpu_table(results: dict[tuple[str, str, int, str], Cell], stack: Stack, clients: list[str]) -> None:
    roles = ["client", "backend", "envoy", "aggregator", "control-plane", "fastmcp", "fastmcp-shared"]
    roles = [r for r in roles if r == "client" or r in stack.pids]
    print("\nCPU per call (ms), by process, during the measured calls")
    head = (
        f"{'client':6} {'family':6} {'conc':>4} {'target':<20} |" + "".join(f" {r:>13}" for r in roles) + " |   total"
    )
    print(head)
    print("-" * len(head))
    labels = {t.key: t.label for t in stack.targets}
    for client, mode, conc in itertools.product(clients, FAMILIES, CONCURRENCY):
        for key in labels:
            cell = results.get((client, mode, conc, key))
            if cell is None:
                continue
            row = f"{client:6} {family_name(mode):6} {conc:>4} {labels[key]:<20} |"
            row += "".join(f" {fmt(cell.cpu_ms[r], 13) if r in cell.cpu_ms else '':>13}" for r in roles)
            print(row + f" | {fmt(sum(cell.cpu_ms.values()), 7)}")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def tools_list_figures(rounds: int, backends: int) -> dict[str, Any] | None:
    """bench/aggregator/tools_list.py at `backends` x 20 tools (calls.py's default: 200), in its own process."""
    argv = [
        sys.executable, str(Path(__file__).with_name("tools_list.py")),
        "--tools", str(20 * backends), "--backends", str(backends), "--rounds", str(rounds), "--no-calls",
    ]  # fmt: skip
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print("tools_list.py did not finish within 300 s", flush=True)
        return None
    if out.returncode != 0:
        print(f"tools_list.py failed ({out.returncode}):\n{out.stderr[-2000:]}", flush=True)
        return None
    return json.loads(out.stdout)


async def run_calls(
    args: argparse.Namespace, stack: Stack, clients: list[str]
) -> dict[tuple[str, str, int, str], Cell]:
    results: dict[tuple[str, str, int, str], Cell] = {}
    for client, mode, conc, target in itertools.product(clients, FAMILIES, CONCURRENCY, stack.targets):
        calls = args.calls if conc == 1 else args.calls16
        cell = await measure(client, target, target.tool, mode, conc, calls, args.seconds)
        results[(client, mode, conc, target.key)] = cell
        print(
            f"  {client:4} {family_name(mode):6} c={conc:<3} {target.label:<20} {len(cell.samples):5d} calls in {cell.wall:5.2f} s: "
            f"median {cell.median:6.2f} ms  p99 {cell.p99:6.2f} ms  {cell.rate:6.0f}/s"
            + (f"  failures {cell.failures}" if cell.failures else ""),
            flush=True,
        )
    return results


@dataclass
class Listing:
    backends: int
    tools: int
    startup: float  # seconds from starting the stack to every catalog merged and routable
    page: dict[tuple[str, str], list[float]]  # (client, mode) -> ms per first page
    walk: dict[tuple[str, str], list[float]]  # (client, mode) -> ms per walk of every page
    rss: dict[str, float]


async def measure_listing(url: str, tools: int, clients: list[str], rounds: int) -> tuple[dict, dict]:
    pages: dict[tuple[str, str], list[float]] = {}
    walks: dict[tuple[str, str], list[float]] = {}
    for client_kind, mode in itertools.product(clients, FAMILIES):
        async with CLIENTS[client_kind](url, mode) as client:
            for _ in range(3):
                await client.list_page(None)
            samples = []
            for _ in range(rounds):
                began = time.perf_counter()
                await client.list_page(None)
                samples.append((time.perf_counter() - began) * 1000)
            pages[(client_kind, mode)] = samples
            walked = []
            for _ in range(max(3, rounds // 20)):
                began, count, cursor = time.perf_counter(), 0, None
                while True:
                    n, cursor = await client.list_page(cursor)
                    count += n
                    if cursor is None:
                        break
                walked.append((time.perf_counter() - began) * 1000)
                assert count == tools, f"walked {count} tools, expected {tools}"
            walks[(client_kind, mode)] = walked
    return pages, walks


def run_listing(args: argparse.Namespace, clients: list[str], workdir: Path) -> Listing:
    """The real stack with `--list-backends` backends of 20 tools each (every one served by one demo process:
    the control plane probes each name, Envoy has a cluster per name, the aggregator merges them all)."""
    backends, per_backend = args.list_backends, 20
    started = time.monotonic()
    with stopping([]) as procs:
        url, _ = start_backend(procs, "gen", "--tools", str(per_backend - 3))  # echo, add, slow + tool_0..16
        # One probe round (spread over 3 s), none during the measurement: a later round against one process
        # answering for 200 backends turns some `degraded` and back, each flip a view change and a re-merge.
        # A long probe timeout: at start-up the control plane's event loop stalls for seconds (one SSL context
        # built per prober), and a timed-out first probe backs off (1 s doubling, up to the interval).
        entries = [{"name": f"b{i}", "url": url} for i in range(backends)]
        config, pids = start_gateway(
            entries, workdir, procs, health={"interval": "10m", "timeout": "60s", "jitter": 0.005}
        )
        healthz = f"http://{config.aggregator.address}:{config.aggregator.port}/healthz"
        target = Target("gateway", "(b) gateway", config.public_url(), "b0_echo", pids)

        async def go() -> tuple[dict, dict, float]:
            await wait_gateway_ready(healthz, target, backends, backends * per_backend, timeout=300)
            ready = time.monotonic() - started
            pages, walks = await measure_listing(target.url, backends * per_backend, clients, args.list_rounds)
            return pages, walks, ready

        pages, walks, ready = asyncio.run(go())
        rss = {role: rss_mb(pid) for role, pid in pids.items()}
    return Listing(backends, backends * per_backend, ready, pages, walks, rss)


def print_listing(listing: Listing, in_process: dict[str, Any] | None) -> None:
    print(
        f"\ntools/list of the merged catalog: {listing.backends} backends x 20 tools = {listing.tools} tools (prefix naming), "
        f"through Envoy + aggregator processes; stack ready with every catalog merged in {listing.startup:.1f} s"
    )
    print(
        f"{'client':6} {'family':6} | {'first page (100 tools) median / p99 ms':>40} | {'all ' + str(listing.tools // 100) + ' pages, median ms':>24}"
    )
    for (client, mode), samples in listing.page.items():
        ordered = sorted(samples)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        print(
            f"{client:6} {family_name(mode):6} | {statistics.median(samples):31.2f} / {p99:6.2f} | {statistics.median(listing.walk[(client, mode)]):24.1f}"
        )
    print(
        f"RSS with {listing.backends} backends: control plane {listing.rss['control-plane']:.1f} MB, aggregator {listing.rss['aggregator']:.1f} MB, "
        f"envoy {listing.rss['envoy']:.1f} MB"
    )
    if in_process is not None:
        print(
            f"in process (bench/aggregator/tools_list.py --tools {in_process['tools']} --backends {in_process['backends']}, priority naming):"
            f" merge {in_process['merge']['median_ms']:.1f} ms;"
            " one page over HTTP, server side (request body in to answer out): "
            + ", ".join(
                f"{family_name(m)} {in_process[f'list_page_http_server_side[{m}]']['median_ms']:.2f} ms"
                for m in FAMILIES
            )
            + "; client side (SDK client in the same process): "
            + ", ".join(
                f"{family_name(m)} {in_process[f'list_page_http_client_side[{m}]']['median_ms']:.2f} ms"
                for m in FAMILIES
            )
        )


def summarize(
    args: argparse.Namespace,
    results: dict[tuple[str, str, int, str], Cell],
    fail_fast: dict[tuple[str, str], Cell],
    rss: dict[str, float],
    listing: Listing | None,
    judge: str,
    interleaved: dict[str, Interleaved],
) -> None:
    print(f"\ntargets (judged on the {judge} load generator)")
    get = lambda mode, conc, key: results.get((judge, mode, conc, key))  # noqa: E731
    for mode in FAMILIES:
        a, b = get(mode, 1, "direct"), get(mode, 1, "gateway")
        paired = interleaved.get(mode)
        if paired is not None:
            added, hop = paired.added("gateway"), paired.added("envoy")
            print(
                f"  (b)-(a) added median latency, {family_name(mode)}, c=1, interleaved: {added:.2f} ms ({paired.median('direct'):.2f} -> "
                f"{paired.median('gateway'):.2f}; {paired.shape})   target < 2 ms: {verdict(added < 2)}"
            )
            print(
                f"      of which two Envoy hops 2 x ((d)-(a)) = 2 x {hop:.2f} ms, the aggregator the remaining {added - 2 * hop:.2f} ms"
            )
        if a and b:
            added = b.median - a.median
            cpu = sum(b.cpu_ms.values()) - sum(a.cpu_ms.values())
            print(
                f"  (b)-(a) added median latency, {family_name(mode)}, c=1, sequential cells: {added:.2f} ms ({a.median:.2f} -> {b.median:.2f});"
                f" added CPU per call, all processes: {cpu:.2f} ms (the aggregator's {b.cpu_ms.get('aggregator', float('nan')):.2f} ms)"
                + ("" if paired is not None else f"   target < 2 ms: {verdict(added < 2)}")
            )
    for mode in FAMILIES:
        b, c = get(mode, 16, "gateway"), get(mode, 16, "fastmcp")
        if b and c:
            print(
                f"  (b)/(c) calls/s, {family_name(mode)}, c=16: {b.rate:.0f} / {c.rate:.0f} = {b.rate / c.rate:.1f}x   target >= 2x: {verdict(b.rate >= 2 * c.rate)}"
            )
        shared = get(mode, 16, "fastmcp-shared")
        if b and shared:
            print(
                f"  (b)/(c') calls/s vs FastMCP with one shared backend session, {family_name(mode)}, c=16: {b.rate / shared.rate:.1f}x"
            )
    for conc in CONCURRENCY:
        legacy, modern = get("legacy", conc, "gateway"), get(MODERN, conc, "gateway")
        if legacy and modern:
            ratio = modern.rate / legacy.rate
            print(
                f"  modern/legacy calls/s through (b), c={conc}: {modern.rate:.0f} / {legacy.rate:.0f} = {ratio:.2f}   target >= 0.5: {verdict(ratio >= 0.5)}"
            )
    for (client, mode), cell in fail_fast.items():
        ok = set(cell.failures) == set() and len(cell.samples) > 0
        print(
            f"  fail-fast: {client} {family_name(mode)} call to the dead backend via (b), c=1: median {cell.median:.2f} ms p99 {cell.p99:.2f} ms"
            f" (CPU per call: envoy {cell.cpu_ms['envoy']:.2f} ms, aggregator {cell.cpu_ms['aggregator']:.2f} ms)"
            f"{'' if ok else f'  (unexpected answers: {cell.failures})'}   target < 5 ms: {verdict(cell.median < 5 and ok)}"
        )
    if rss:
        both = rss["control-plane"] + rss["aggregator"]
        print(
            f"  RSS after the run: control plane {rss['control-plane']:.1f} MB + aggregator {rss['aggregator']:.1f} MB = {both:.1f} MB"
            f" (envoy {rss['envoy']:.1f} MB, backend {rss['backend']:.1f} MB)   target < 150 MB: {verdict(both < 150)}"
        )
        if "pss:control-plane" in rss:
            pss = rss["pss:control-plane"] + rss["pss:aggregator"]
            print(
                f"      PSS (shared pages counted by share): control plane {rss['pss:control-plane']:.1f} MB + aggregator "
                f"{rss['pss:aggregator']:.1f} MB = {pss:.1f} MB (information only: the target is judged on RSS)"
            )
        if "ready:control-plane" in rss:
            print(
                f"      RSS when the stack was ready, before any call: control plane {rss['ready:control-plane']:.1f} MB + aggregator "
                f"{rss['ready:aggregator']:.1f} MB = {rss['ready:control-plane'] + rss['ready:aggregator']:.1f} MB"
            )
    if listing is not None:
        for mode in FAMILIES:
            samples = listing.page.get((judge, mode))
            if samples:
                median = statistics.median(samples)
                print(
                    f"  tools/list, {listing.tools} tools from {listing.backends} backends, {family_name(mode)}, one page (100 tools) via (b): "
                    f"median {median:.2f} ms   target < 10 ms: {verdict(median < 10)}"
                )


async def measure_all(args: argparse.Namespace, stack: Stack, clients: list[str]) -> tuple[dict, dict, dict, dict]:
    assert stack.gateway is not None
    await wait_gateway_ready(stack.healthz, stack.gateway, 1, 1)
    ready = {f"ready:{role}": rss_mb(stack.pids[role]) for role in ("control-plane", "aggregator")}
    print("measuring (per cell: calls, wall time, median, p99, calls/s)", flush=True)
    results = await run_calls(args, stack, clients)
    interleaved: dict[str, Interleaved] = {}
    if args.interleave_blocks > 0:
        paired = [t for t in stack.targets if t.key in ("direct", "gateway", "envoy")]
        for mode in FAMILIES:
            interleaved[mode] = await measure_interleaved(paired, mode, args.interleave_blocks, args.interleave_calls)
            print(
                f"  raw  {family_name(mode):6} c=1   interleaved ({interleaved[mode].shape}): "
                + ", ".join(f"{t.label} median {interleaved[mode].median(t.key):.2f} ms" for t in paired),
                flush=True,
            )
    fail_fast: dict[tuple[str, str], Cell] = {}
    for client, mode in itertools.product(clients, FAMILIES):
        fail_fast[(client, mode)] = await measure(
            client, stack.gateway, stack.dead_tool, mode, 1, args.calls, args.seconds, expect=-32050
        )
    rss = {role: rss_mb(stack.pids[role]) for role in ("control-plane", "aggregator", "envoy", "backend")}
    rss.update({f"pss:{role}": pss_mb(stack.pids[role]) for role in ("control-plane", "aggregator")})
    rss.update(ready)
    return results, fail_fast, rss, interleaved


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--client", choices=["raw", "sdk", "both"], default="both", help="load generator(s) (default both)"
    )
    parser.add_argument("--calls", type=int, default=300, help="calls per cell at concurrency 1 (default 300)")
    parser.add_argument("--calls16", type=int, default=2000, help="calls per cell at concurrency 16 (default 2000)")
    parser.add_argument("--seconds", type=float, default=6.0, help="time cap per cell (default 6)")
    parser.add_argument(
        "--interleave-blocks",
        type=int,
        default=20,
        help="rounds of the interleaved c=1 measurement of (a), (b), (d) that judges the added latency (0: skip; default 20)",
    )
    parser.add_argument("--interleave-calls", type=int, default=25, help="raw calls per target per round (default 25)")
    parser.add_argument(
        "--raw-http",
        choices=["http11", "httpx2"],
        default="http11",
        help="the raw load generator's HTTP client (default http11: xds_control.http11, the lighter)",
    )
    parser.add_argument("--no-fastmcp", action="store_true", help="skip (c)")
    parser.add_argument(
        "--fastmcp-session",
        choices=["fresh", "shared", "both"],
        default="both",
        help="FastMCP's backend sessions: fresh = create_proxy(url) (per request), shared = one connected Client (default both)",
    )
    parser.add_argument("--no-list", action="store_true", help="skip the 4,000-tool tools/list figures")
    parser.add_argument(
        "--list-backends", type=int, default=200, help="backends of 20 tools each for tools/list (default 200)"
    )
    parser.add_argument(
        "--list-rounds", type=int, default=100, help="first-page requests per client and family (default 100)"
    )
    parser.add_argument(
        "--backend-family",
        choices=["both", "legacy", "modern"],
        default="both",
        help="families the demo backend serves (both: the aggregator's prober picks modern)",
    )
    args = parser.parse_args()
    clients = ["raw", "sdk"] if args.client == "both" else [args.client]
    RAW_HTTP[0] = args.raw_http

    unwind_on_sigterm()
    started = time.monotonic()
    print(f"cpus: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, running_stack(args, Path(tmp)) as stack:
        print(
            f"stack up in {time.monotonic() - started:.1f} s: "
            + ", ".join(f"{t.label} {t.url}" for t in stack.targets),
            flush=True,
        )
        results, fail_fast, rss, interleaved = asyncio.run(measure_all(args, stack, clients))
    listing, in_process = None, None
    if not args.no_list:
        print(f"tools/list: starting a stack with {args.list_backends} backends", flush=True)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                listing = run_listing(args, clients, Path(tmp))
        except Exception as exc:
            print(f"tools/list at {args.list_backends} backends failed: {exc}", flush=True)
        print(f"tools/list: bench/aggregator/tools_list.py --backends {args.list_backends} --no-calls", flush=True)
        in_process = tools_list_figures(min(50, args.list_rounds), args.list_backends)
    print_call_table(results, stack, clients)
    print_cpu_table(results, stack, clients)
    if listing is not None:
        print_listing(listing, in_process)
    summarize(args, results, fail_fast, rss, listing, "raw" if "raw" in clients else "sdk", interleaved)
    print(
        f"\ntotal {time.monotonic() - started:.0f} s; load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if not args.no_list and (listing is None or in_process is None):
        print("some figures are missing: the tools/list part failed (see above)", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
