"""Shared pieces of the hostile suite (`tests/hostile/`) and of `bench/hostile.py`.

An *attack* is a registered coroutine that does one hostile thing to a running stack and returns what the
attacker was told. `run_attack` starts the stack the attack asks for (real processes: `xds-control serve`,
demo backends, optionally Envoy and `xds-control aggregator`), starts the observer (a separate process,
`tests/hostile/observer.py`: a heartbeat per event loop, RSS sampling, the legitimate client's loop), runs
the attack, and returns a `Report`: the longest stall of each event loop, each process's RSS growth, the
legitimate client's calls and failures, and the attack's own findings.

    @attack("admin-report-outcomes", surface="admin ReportOutcomes", stack=StackSpec(backends=("weather", "victim")))
    async def report_outcomes(stack: HostileStack, scale: Scale) -> Finding:
        ...
        return Finding("UNAUTHENTICATED: ...", {"refused": True})

Tests assert `report.within(TEST_BOUNDS)` plus the finding; the benchmark prints every report against
`TARGETS`. Attacks live in `tests/hostile/attacks_*.py` (imported by `load_attacks()`); add a module there
to add rows to both.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import ROOT, Proc, demo_backend
from tests.support.stack import envoy_ready, stack_config, start_envoy
from tests.support.waiting import wait_until
from xds_control.config import Config, dump_config

MB = 1024 * 1024
MIN_WINDOW = 1.5  # seconds each attack is observed at least (the tests)
BENCH_WINDOW = 5.0  # ... in the benchmark


# -- bounds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """What an attack may cost: the longest event-loop stall, RSS growth per process, legit failures."""

    stall_ms: float
    rss_growth_bytes: int
    legit_errors: int = 0


# The benchmark's targets (issue 14). The tests' stall bound is looser: they run on a shared 2-core machine
# beside other test workers, where a healthy loop's answer can take a few hundred ms; a loop that iterates
# over a peer's count or buffers a peer's flood stalls for seconds and still fails it.
TARGETS = Bounds(stall_ms=100.0, rss_growth_bytes=100 * MB)
TEST_BOUNDS = Bounds(stall_ms=1500.0, rss_growth_bytes=100 * MB)


# -- the stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackSpec:
    """What an attack needs running. `backends`: demo backends by name (`weather` is the legitimate client's);
    `extra_backends`: more config entries (e.g. a hostile backend the attack starts itself, see `before`);
    `config`: section overrides merged into the test config; `aggregator` implies `envoy`."""

    backends: tuple[str, ...] = ("weather",)
    envoy: bool = False
    aggregator: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)
    serve_env: Mapping[str, str] = field(default_factory=dict)
    # Runs before the control plane starts: returns extra config backends (and may start processes it
    # registers with `stack.own`), e.g. a hostile MCP backend.
    before: Callable[[HostileStack], list[dict[str, Any]]] | None = None


HEALTH = {"interval": 0.5, "timeout": 2.0, "unhealthy_threshold": 2, "jitter": 0.1}


class HostileStack:
    """Real processes on free ports, all stopped by `stop()`. Blocking: start it off an event loop."""

    def __init__(self, spec: StackSpec, workdir: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        self.procs: dict[str, Proc] = {}
        self.extra: list[Proc] = []
        self.config: Config | None = None
        self.config_path = workdir / "xds-control.yaml"

    # -- lifecycle --

    def own(self, proc: Proc) -> Proc:
        """Stop `proc` with the stack."""
        self.extra.append(proc)
        return proc

    def start(self) -> HostileStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        backends = []
        for name in self.spec.backends:
            proc = self.own(demo_backend(name, 0))
            url = proc.wait_for_line("READY").split()[-1]
            backends.append({"name": name, "url": url})
        if self.spec.before is not None:
            backends += self.spec.before(self)
        sections = {key: dict(value) for key, value in self.spec.config.items()}
        sections["health"] = {**HEALTH, **sections.get("health", {})}
        sections["control_plane"] = {"admin_cookie_file": str(self.cookie), **sections.get("control_plane", {})}
        self.config = stack_config(backends, **sections)
        self.write_config(dump_config(self.config))
        serve = Proc(
            [sys.executable, "-m", "xds_control.cli", "serve", "-c", str(self.config_path)],
            env=dict(self.spec.serve_env),
            name="control-plane",
        )
        self.procs["control-plane"] = serve
        serve.wait_for_line("READY xds=", timeout=60)
        if self.spec.envoy or self.spec.aggregator:
            self.procs["envoy"] = envoy = start_envoy(self.config, self.workdir, wait_ready=False)
            wait_until(lambda: _up(envoy) and envoy_ready(self.config), timeout=40, what="envoy /ready")
        if self.spec.aggregator:
            aggregator = Proc(
                [sys.executable, "-m", "xds_control.cli", "aggregator", "-c", str(self.config_path)],
                name="aggregator",
            )
            self.procs["aggregator"] = aggregator
            aggregator.wait_for_line("READY", timeout=60)
        if "weather" in self.spec.backends:
            self.wait_routable("weather")

    def stop(self) -> None:
        for proc in [*reversed(self.procs.values()), *self.extra]:
            with contextlib.suppress(Exception):
                proc.stop(timeout=5)
            if proc.popen.stdout is not None:
                with contextlib.suppress(Exception):
                    proc.popen.stdout.close()

    def write_config(self, text: str) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)  # atomic, as an editor or a config map would

    # -- addresses --

    @property
    def cfg(self) -> Config:
        assert self.config is not None
        return self.config

    @property
    def admin_target(self) -> str:
        return self.cfg.admin_dial()

    @property
    def xds_target(self) -> str:
        host, port = self.cfg.xds_dial()
        return f"{host}:{port}"

    @property
    def mcp_url(self) -> str:
        return self.cfg.public_url()

    @property
    def aggregator_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.aggregator.port}"

    def pid(self, name: str) -> int:
        return self.procs[name].popen.pid

    def log(self, name: str = "control-plane") -> str:
        return self.procs[name].output

    @property
    def cookie(self) -> Path:
        return self.workdir / "admin.cookie"

    def admin_token(self) -> str | None:
        """The admin token mutating calls need: the cookie file the control plane wrote, if any."""
        return self.cookie.read_text().strip() if self.cookie.exists() else None

    # -- waits --

    def backend(self, name: str) -> Any:
        import grpc

        from xds_control.admin.v1 import admin_pb2 as pb
        from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc

        with grpc.insecure_channel(self.admin_target) as channel:
            return pb_grpc.AdminStub(channel).GetBackend(pb.GetBackendRequest(name=name), timeout=10).backend

    def wait_routable(self, name: str, timeout: float = 60.0) -> None:
        wait_until(lambda: self.backend(name).routable, timeout=timeout, what=f"{name} routable")

    def envoy_acked(self, type_short: str = "ClusterLoadAssignment") -> str:
        """The version of `type_short` our Envoy (the config's node id) has ACKed, per ListNodes."""
        import grpc

        from xds_control.admin.v1 import admin_pb2 as pb
        from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc

        with grpc.insecure_channel(self.admin_target) as channel:
            nodes = pb_grpc.AdminStub(channel).ListNodes(pb.ListNodesRequest(), timeout=10).nodes
        for node in nodes:
            if node.node_id == self.cfg.envoy.node_id:
                return next((t.acked_version for t in node.types if t.type_url.endswith(type_short)), "")
        return ""

    def envoy_follows_a_change(self, timeout: float = 30.0) -> float:
        """Drain and undrain `weather` (with the admin token) and wait for our Envoy to ACK each EDS change:
        the legitimate ADS client still gets its updates. Returns the seconds it took."""
        import grpc

        from xds_control.admin.v1 import admin_pb2 as pb
        from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc

        started = time.monotonic()
        metadata = (("authorization", f"Bearer {self.admin_token()}"),)
        with grpc.insecure_channel(self.admin_target) as channel:
            stub = pb_grpc.AdminStub(channel)
            for request in (stub.Drain, stub.Undrain):
                before = self.envoy_acked()
                request(
                    pb.DrainRequest(name="weather") if request is stub.Drain else pb.UndrainRequest(name="weather"),
                    timeout=10,
                    metadata=metadata,
                )
                wait_until(
                    lambda b=before: self.envoy_acked() not in ("", b), timeout=timeout, what="Envoy ACKs the new EDS"
                )
        return time.monotonic() - started


def _up(proc: Proc) -> bool:
    if not proc.alive():
        raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.output[-3000:]}")
    return True


# -- the observer ---------------------------------------------------------------------------


@dataclass
class Observation:
    stall_ms: dict[str, float]
    heartbeats: dict[str, int]
    heartbeat_errors: dict[str, list[str]]
    rss_first: dict[str, int]
    rss_peak: dict[str, int]
    legit_calls: int
    legit_errors: int
    legit_error_texts: list[str]
    stuck: list[str]

    @property
    def rss_growth(self) -> dict[str, int]:
        return {name: max(0, self.rss_peak[name] - self.rss_first[name]) for name in self.rss_peak}


class Observer:
    """The observer process (see observer.py); `stop()` returns its `Observation`."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.observer", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(ROOT),
            text=True,
        )
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if line.strip() != "READY":
            self.popen.kill()
            raise AssertionError(f"observer did not start: {line!r}")

    def stop(self) -> Observation:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        try:
            self.popen.stdin.write("stop\n")
            self.popen.stdin.flush()
            line = self.popen.stdout.readline()
            self.popen.wait(timeout=30)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
            self.popen.stdin.close()
            self.popen.stdout.close()
        return Observation(**json.loads(line))


def observer_spec(stack: HostileStack) -> dict[str, Any]:
    heartbeats: dict[str, Any] = {"control-plane": {"kind": "grpc_health", "target": stack.admin_target}}
    legit: list[dict[str, Any]] = [{"kind": "admin_read", "target": stack.admin_target}]
    rss = {name: stack.pid(name) for name in stack.procs}
    if "aggregator" in stack.procs:
        url = f"{stack.aggregator_url}/healthz"
        heartbeats["aggregator"] = {"kind": "http", "url": url}
        legit.append(
            {"kind": "mcp_call", "url": stack.mcp_url, "tool": "weather_get_forecast", "arguments": {"city": "Oslo"}}
        )
    return {"heartbeats": heartbeats, "rss": rss, "legit": legit}


@contextlib.contextmanager
def observing(stack: HostileStack) -> Iterator[list[Observation]]:
    """Observe `stack` for the duration of the block; the observation is appended to the yielded list."""
    observer = Observer(observer_spec(stack))
    found: list[Observation] = []
    try:
        yield found
    finally:
        found.append(observer.stop())


# -- attacks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """How hard an attack pushes: `bench` is the issue's size, the tests use a smaller one that still shows
    the defect (a stall or growth many times the bound) on the code without the fix."""

    bench: bool = False

    def pick(self, test: Any, bench: Any) -> Any:
        return bench if self.bench else test


@dataclass
class Finding:
    """What the attacker was told (a short text: the clear error it got) and what the attack measured."""

    attacker_saw: str
    facts: dict[str, Any] = field(default_factory=dict)


AttackFn = Callable[["HostileStack", Scale], Awaitable[Finding]]


@dataclass(frozen=True)
class Attack:
    name: str
    surface: str
    stack: StackSpec
    run: AttackFn


REGISTRY: dict[str, Attack] = {}


def attack(name: str, *, surface: str, stack: StackSpec | None = None) -> Callable[[AttackFn], AttackFn]:
    """Register an attack under `name` (its row in `bench/hostile.py`)."""

    def register(fn: AttackFn) -> AttackFn:
        if name in REGISTRY:
            raise ValueError(f"attack {name!r} registered twice")
        REGISTRY[name] = Attack(name, surface, stack or StackSpec(), fn)
        return fn

    return register


def load_attacks() -> dict[str, Attack]:
    """Import every `tests/hostile/attacks_*.py` (each registers its attacks) and return the registry."""
    package = Path(__file__).parent
    for module in pkgutil.iter_modules([str(package)]):
        if module.name.startswith("attacks_"):
            importlib.import_module(f"tests.hostile.{module.name}")
    return REGISTRY


@dataclass
class Report:
    attack: Attack
    observation: Observation
    finding: Finding
    seconds: float

    def problems(self, bounds: Bounds) -> list[str]:
        """Every bound this run broke, as readable lines (empty: within bounds)."""
        found = []
        obs = self.observation
        for name, stall in obs.stall_ms.items():
            if stall > bounds.stall_ms:
                found.append(f"{name} event loop stalled {stall:.0f} ms (bound {bounds.stall_ms:.0f} ms)")
        for name, growth in obs.rss_growth.items():
            if growth > bounds.rss_growth_bytes:
                found.append(f"{name} RSS grew {growth / MB:.0f} MB (bound {bounds.rss_growth_bytes / MB:.0f} MB)")
        if obs.legit_errors > bounds.legit_errors:
            found.append(f"the legitimate client saw {obs.legit_errors} failures: {obs.legit_error_texts}")
        if obs.legit_calls == 0:
            found.append("the legitimate client made no call at all")
        for name, errors in obs.heartbeat_errors.items():
            found.append(f"{name} heartbeat failed: {errors}")
        if obs.stuck:
            found.append(f"observer threads never returned: {obs.stuck}")
        return found


async def run_attack(attack_: Attack, workdir: Path, scale: Scale | None = None) -> Report:
    """Start the attack's stack, observe it while the attack runs, stop everything."""
    scale = scale or Scale()
    stack = HostileStack(attack_.stack, workdir)
    await asyncio.to_thread(stack.start)
    try:
        started = time.monotonic()
        with observing(stack) as found:
            finding = await attack_.run(stack, scale)
            # A measurement window, not a synchronisation: a short attack is still watched for a while
            # after it (a loop may stall once the attacker is gone, e.g. over what it left behind).
            window = scale.pick(MIN_WINDOW, BENCH_WINDOW)
            await asyncio.sleep(max(0.0, window - (time.monotonic() - started)))
        seconds = time.monotonic() - started
        return Report(attack_, found[0], finding, seconds)
    finally:
        await asyncio.to_thread(stack.stop)


def run_attack_sync(name: str, scale: Scale | None = None, workdir: Path | None = None) -> Report:
    attacks = load_attacks()
    with tempfile.TemporaryDirectory(prefix=f"hostile-{name}-") as tmp:
        return asyncio.run(run_attack(attacks[name], workdir or Path(tmp), scale))


def child_env_of(pid: int) -> dict[str, str]:
    """The environment a process was started with (/proc/PID/environ)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
