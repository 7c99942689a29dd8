"""The process shell of `xds-control up`: start children, watch their output and
exits, wait for their readiness rules, stop them all.

Decisions (what a child's exit means, what "ready" means) come from `plan.py`;
this module only does the I/O. Every child runs in its own session (its own
process group, so Ctrl-C in a terminal reaches only us and we stop children in
order), and on Linux is killed by the kernel if this process dies
(PR_SET_PDEATHSIG), so no child outlives a crashed or SIGKILLed runner.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from urllib.parse import urlsplit

from xds_control.errors import SupervisorError
from xds_control.runner.plan import (
    STOP_GRACE,
    ChildSpec,
    HttpReady,
    LineReady,
    Phase,
    Readiness,
    TcpReady,
    child_environment,
    on_child_exit,
)
from xds_control.runner.report import Reporter

POLL_INTERVAL = 0.05  # between readiness attempts on a socket that does not accept yet
OUTPUT_LIMIT = 1 << 20  # longest output line read whole
TAIL_LINES = 200

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent(parent_pid: int) -> None:  # pragma: no cover - runs in the child between fork and exec
    """preexec_fn: have the kernel SIGKILL this child when its parent dies."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class ChildFailed(SupervisorError):
    """A child exited (or never became ready) in a way that stops the stack."""

    def __init__(self, spec: ChildSpec, message: str, tail: list[str] | None = None) -> None:
        self.spec = spec
        self.tail = tail or []
        shown = "".join(f"\n    {line}" for line in self.tail)
        super().__init__(message + (f"\n  last output of {spec.name}:{shown}" if shown else ""))


class Child:
    """One running child: its process, the tail of its output, its exit."""

    def __init__(self, spec: ChildSpec, process: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.process = process
        self.pid = process.pid
        self.started_at = time.monotonic()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.ready = False
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.waiting_for: Readiness | None = None
        # LineReady rules are matched as output arrives, so a line printed before anyone waits is not lost.
        self._line_rules = {
            rule.pattern: re.compile(rule.pattern) for rule in spec.ready if isinstance(rule, LineReady)
        }
        self.matched: dict[str, str] = {}
        self._line_seen = asyncio.Event()

    def feed(self, line: str) -> None:
        self.tail.append(line)
        for pattern, regex in self._line_rules.items():
            if pattern not in self.matched and regex.search(line):
                self.matched[pattern] = line
                self._line_seen.set()

    async def wait_line(self, pattern: str) -> str:
        while pattern not in self.matched:
            self._line_seen.clear()
            await self._line_seen.wait()
        return self.matched[pattern]

    def last_lines(self, count: int = 8) -> list[str]:
        return list(self.tail)[-count:]


class Supervisor:
    """Owns every child and the tasks that watch them. Use as `async with Supervisor(reporter) as sup:`;
    leaving the block stops every child (SIGTERM, then SIGKILL after `grace` seconds)."""

    def __init__(self, reporter: Reporter, *, grace: float = STOP_GRACE) -> None:
        self.reporter = reporter
        self.grace = grace
        self.children: list[Child] = []
        self.stopping = False
        self.fatal = asyncio.Event()  # a child's exit decided that the stack must stop
        self.fatal_error: ChildFailed | None = None
        self._tg = asyncio.TaskGroup()

    async def __aenter__(self) -> Supervisor:
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop_all()
        finally:
            # The watch tasks end on their own once every child has exited. The body's exception
            # is not handed to the task group, which would wrap it in an ExceptionGroup.
            await self._tg.__aexit__(None, None, None)

    # -- starting ------------------------------------------------------------

    async def start(self, spec: ChildSpec) -> Child:
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=child_environment(spec, os.environ),
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                limit=OUTPUT_LIMIT,
            )
        except OSError as exc:
            raise SupervisorError(f"cannot start {spec.name}: {exc.strerror or exc}: {spec.argv[0]}") from None
        child = Child(spec, process)
        self.children.append(child)
        self.reporter.starting(spec, child.pid)
        self._tg.create_task(self._watch(child), name=f"watch-{spec.name}")
        return child

    async def _pump(self, child: Child) -> None:
        stream = child.process.stdout
        assert stream is not None
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than OUTPUT_LIMIT: take what there is
                raw = await stream.read(OUTPUT_LIMIT)
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\r\n")
            child.feed(line)
            self.reporter.output(child.spec, line)

    async def _watch(self, child: Child) -> None:
        await self._pump(child)
        child.returncode = await child.process.wait()
        child.exited.set()
        phase = Phase.STOPPING if self.stopping else Phase.RUNNING if child.ready else Phase.STARTING
        decision = on_child_exit(child.spec, child.returncode, phase)
        self.reporter.exited(child.spec, decision)
        if decision.stop_stack and self.fatal_error is None:
            self.fatal_error = ChildFailed(child.spec, decision.message, child.last_lines())
            self.fatal.set()

    # -- readiness -----------------------------------------------------------

    async def wait_ready(self, child: Child) -> None:
        """Wait until every readiness rule of `child` holds; raise ChildFailed after its start timeout.
        (A child that exits meanwhile is reported through `fatal`; callers race that.)"""
        try:
            async with asyncio.timeout(child.spec.start_timeout):
                for rule in child.spec.ready:
                    child.waiting_for = rule
                    await self._check(child, rule)
        except TimeoutError:
            waiting = child.waiting_for
            waited = f" (waiting for {waiting.describe()})" if waiting else ""
            raise ChildFailed(
                child.spec,
                f"{child.spec.name} was not ready within {child.spec.start_timeout:g}s{waited}",
                child.last_lines(),
            ) from None
        child.waiting_for = None
        child.ready = True
        self.reporter.ready(child.spec, time.monotonic() - child.started_at)

    async def wait_all_ready(self, children: list[Child]) -> None:
        """`wait_ready` for children started together; the first failure cancels the other waits."""
        try:
            async with asyncio.TaskGroup() as group:
                for child in children:
                    group.create_task(self.wait_ready(child), name=f"ready-{child.spec.name}")
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None

    async def _check(self, child: Child, rule: Readiness) -> None:
        if isinstance(rule, LineReady):
            await child.wait_line(rule.pattern)
            return
        while not await (tcp_accepts(rule.host, rule.port) if isinstance(rule, TcpReady) else http_status_is(rule)):
            await asyncio.sleep(POLL_INTERVAL)

    # -- stopping ------------------------------------------------------------

    def _signal_all(self, sig: int) -> None:
        for child in reversed(self.children):
            if child.returncode is None:
                try:
                    os.killpg(child.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    async def stop_all(self) -> None:
        """SIGTERM every child's process group (last started first), SIGKILL whatever is left after `grace`."""
        self.stopping = True
        if all(c.exited.is_set() for c in self.children):
            return
        self._signal_all(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.grace):
                await asyncio.gather(*(c.exited.wait() for c in self.children))
        except TimeoutError:
            laggards = [c.spec.name for c in self.children if not c.exited.is_set()]
            self.reporter.note(f"{', '.join(laggards)} did not stop within {self.grace:g}s: killing")
            self.kill_all()
            await asyncio.gather(*(c.exited.wait() for c in self.children))

    def kill_all(self) -> None:
        """SIGKILL every child now (a second Ctrl-C, or a failed shutdown)."""
        self.stopping = True
        self._signal_all(signal.SIGKILL)


async def tcp_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def http_status_is(rule: HttpReady, timeout: float = 1.0) -> bool:
    """One plain HTTP/1.1 GET (Envoy answers HTTP/1.0 with 426); True when the status code is `rule.status`."""
    parts = urlsplit(rule.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    fields = status_line.split()
    return len(fields) >= 2 and fields[1] == str(rule.status).encode()
